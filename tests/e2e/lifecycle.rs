//! Reload (SIGHUP, POST /reload), drain (SIGTERM) and the binary upgrade
//! hand-off (SIGQUIT), on real processes.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::harness::{envelope, eventually, get, Conn, Gateway, Upstream, POLL};

const RULES: &str = "[[rate_limit.rules]]\nname = \"keep\"\npath_prefix = \"/a\"\nlimit = 2\nperiod = \"1m\"\n\n[[rate_limit.rules]]\nname = \"change\"\npath_prefix = \"/b\"\nlimit = 2\nperiod = \"1m\"\n";

fn statuses(c: &mut Conn, path: &str, n: usize) -> Vec<u16> {
    (0..n).map(|_| c.request("GET", path).status).collect()
}

#[test]
fn sighup_keeps_unchanged_buckets_and_refuses_a_broken_file() {
    let up = Upstream::start();
    let gw = Gateway::start(up.port, "", RULES);
    let mut c = gw.connect();
    assert_eq!(statuses(&mut c, "/a", 3), vec![200, 200, 429]);
    assert_eq!(statuses(&mut c, "/b", 3), vec![200, 200, 429]);

    // `change` gets a new limit; `keep` is untouched; the error table changes.
    let changed = RULES.replace(
        "path_prefix = \"/b\"\nlimit = 2",
        "path_prefix = \"/b\"\nlimit = 3",
    );
    let table = "[errors.by_status.403]\ntype = \"denied\"\ncode = \"reloaded\"\n";
    gw.write_config("", "", &format!("{changed}\n{table}"));
    gw.signal("HUP");
    gw.wait_for_reloads("success", 1);
    assert_eq!(statuses(&mut c, "/a", 1), vec![429], "keep kept its state");
    assert_eq!(
        statuses(&mut c, "/b", 4),
        vec![200, 200, 200, 429],
        "change starts fresh at 3"
    );
    assert_eq!(
        envelope(&c.request("GET", "/errors/message"))["code"],
        "reloaded"
    );

    // A broken file is refused; the running config stays.
    std::fs::write(gw.config_path(), "[server\nthreads = 1\n").unwrap();
    gw.signal("HUP");
    gw.wait_for_reloads("error", 1);
    assert_eq!(statuses(&mut c, "/a", 1), vec![429]);
    assert_eq!(
        envelope(&c.request("GET", "/errors/message"))["code"],
        "reloaded"
    );
    assert!(gw.log().contains("config reload refused"), "{}", gw.log());

    // POST /reload says why, with the place in the file.
    let mut admin = Conn::open(gw.admin);
    let r = admin.send("POST", "/reload", &[], b"").unwrap();
    assert_eq!(r.status, 400);
    let err = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        err.contains(&format!("{}:1:", gw.config_path().display())),
        "{err}"
    );
    assert_eq!(gw.reloads("error"), 2);
    assert_eq!(c.request("GET", "/hello").status, 200, "still serving");

    // `tollgate reload` checks the file first (exit 1, with the place);
    // with the file mended, the running process takes it (exit 0).
    let cli = |args: &[&str]| {
        std::process::Command::new(crate::harness::BIN)
            .args(args)
            .arg("--config")
            .arg(gw.config_path())
            .output()
            .unwrap()
    };
    let out = cli(&["reload"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":1:"),
        "{out:?}"
    );
    gw.write_config("", "", RULES);
    let out = cli(&["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"kept_rules\""));
    assert_eq!(gw.reloads("success"), 2);
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let _serial = crate::harness::exclusive();
    let up = Upstream::start();
    let mut gw = Gateway::start_with(up.port, "grace_period = \"3s\"", "", "");
    let port = gw.port;
    let slow: Vec<_> = (0..5)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Conn::open(port);
                c.send("GET", "/slow?ms=1500", &[], b"").map(|r| r.status)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "new connections refused"
    );
    let r = get(gw.admin, "/readyz").expect("admin answers while draining");
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["status"], "draining");
    for h in slow {
        assert_eq!(
            h.join().unwrap().expect("a response"),
            200,
            "in-flight request completed"
        );
    }
    let remaining = Duration::from_secs(10).saturating_sub(t.elapsed());
    let status = eventually(
        remaining,
        POLL,
        || "did not exit".into(),
        || gw.proc.child.try_wait().unwrap(),
    );
    assert_eq!(status.code(), Some(0), "log:\n{}", gw.log());
}

#[test]
fn sigquit_hands_the_listeners_to_a_new_process() {
    let _serial = crate::harness::exclusive();
    let up = Upstream::start();
    let mut gw = Gateway::start_with(up.port, "grace_period = \"1s\"", "", "");
    let port = gw.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match crate::harness::get(port, "/hello") {
                    Ok(r) if r.status == 200 => ok += 1,
                    _ => failed += 1,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (ok, failed)
        })
    };
    // The new process waits for the sockets; SIGQUIT makes the old one send them.
    let mut new = gw.spawn(&["--upgrade"]);
    std::thread::sleep(Duration::from_millis(500));
    gw.signal("QUIT");
    eventually(
        Duration::from_secs(15),
        POLL,
        || "old process did not exit".into(),
        || gw.proc.child.try_wait().unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = poller.join().unwrap();
    assert!(
        new.child.try_wait().unwrap().is_none(),
        "the new process serves on"
    );
    assert_eq!(get(port, "/hello").unwrap().status, 200);
    assert!(
        ok > 20 && failed == 0,
        "{ok} answered, {failed} failed during the hand-off"
    );
    let _ = new.child.kill();
}
