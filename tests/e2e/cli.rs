//! The CLI: `check`, and refusing a bad file before listening.

use std::process::Command;
use std::time::Duration;

use crate::harness::{eventually, free_port, TempDir, BIN, POLL};

#[test]
fn check_accepts_the_shipped_config() {
    let out = Command::new(BIN)
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/tollgate.toml"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_bad_file_names_file_line_and_key() {
    let dir = TempDir::new();
    let path = dir.0.join("bad.toml");
    std::fs::write(&path, "[upstream]\naddress = \"127.0.0.1:3000\"\n\n[[rate_limit.rules]]\nname = \"x\"\nlimit = 10\nperiod = \"10 parsecs\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:7:", path.display())), "{err}");
    assert!(err.contains("rate_limit.rules[0].period"), "{err}");
}

#[test]
fn run_refuses_a_bad_file_before_listening() {
    let dir = TempDir::new();
    let port = free_port();
    let path = dir.0.join("bad.toml");
    std::fs::write(&path, format!("[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = \"many\"\n[upstream]\naddress = \"127.0.0.1:1\"\n")).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = eventually(
        Duration::from_secs(10),
        POLL,
        || "still running".into(),
        || child.try_wait().unwrap(),
    );
    assert!(!status.success());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
