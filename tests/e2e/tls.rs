//! TLS to the upstream: SNI, a private CA from `upstream.ca_file`, and
//! verification that refuses a certificate it cannot trust. The upstream is
//! a real NGINX with a throwaway self-signed certificate.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{envelope, free_port, wait_for_port, Gateway, PrivateCa, Proc, TempDir};

struct TlsUpstream {
    port: u16,
    ca: String,
    _proc: Proc,
    _dir: TempDir,
}

fn start_nginx() -> TlsUpstream {
    let dir = TempDir::new();
    let d = dir.0.display().to_string();
    let ca = PrivateCa::new(&dir.0);
    let (cert, key) = ca.issue("leaf", "upstream.test");
    let port = free_port();
    let (cert, key) = (cert.display(), key.display());
    let conf = format!(
        r#"daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d};
  proxy_temp_path {d};
  fastcgi_temp_path {d};
  uwsgi_temp_path {d};
  scgi_temp_path {d};
  server {{
    listen 127.0.0.1:{port} ssl;
    server_name upstream.test;
    ssl_certificate {cert};
    ssl_certificate_key {key};
    default_type application/json;
    location /err {{ return 404 '{{"message":"missing over tls"}}'; }}
    location / {{ return 200 '{{"tls":true,"sni":"$ssl_server_name"}}'; }}
  }}
}}
"#
    );
    std::fs::write(dir.0.join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .args([
            "-p",
            &d,
            "-c",
            &format!("{d}/nginx.conf"),
            "-e",
            &format!("{d}/error.log"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx is installed (.ci/run installs it)");
    wait_for_port(port, Duration::from_secs(10));
    TlsUpstream {
        port,
        ca: ca.cert().display().to_string(),
        _proc: Proc { child, log: None },
        _dir: dir,
    }
}

#[test]
fn tls_upstream_with_sni_and_private_ca() {
    let up = start_nginx();
    let upstream = format!(
        "tls = true\nsni = \"upstream.test\"\nca_file = \"{}\"",
        up.ca
    );
    let gw = Gateway::start(up.port, &upstream, "");
    let mut c = gw.connect();
    let r = c.request("GET", "/hello");
    assert_eq!(r.status, 200, "{}", gw.log());
    assert_eq!(r.json()["sni"], "upstream.test");
    let r = c.request("GET", "/err");
    assert_eq!(r.status, 404);
    assert_eq!(envelope(&r)["message"], "missing over tls");
}

#[test]
fn untrusted_upstream_certificate_is_refused() {
    let up = start_nginx();
    // No ca_file: the private CA is not in the system roots.
    let gw = Gateway::start(up.port, "tls = true\nsni = \"upstream.test\"", "");
    let r = gw.connect().request("GET", "/hello");
    assert_eq!(r.status, 502);
    assert_eq!(envelope(&r)["code"], "bad_gateway");
}
