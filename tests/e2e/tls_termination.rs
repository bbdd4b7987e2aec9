//! TLS termination (`[server.tls]`, docs/security.md): HTTP/2 and HTTP/1.1
//! by ALPN with a private CA, the product's behaviour unchanged over TLS,
//! and certificate rotation by replacing the files in place and SIGHUP,
//! while a client keeps its connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::harness::{eventually, free_port, metric, Gateway, PrivateCa, TempDir, Upstream, POLL};

struct TlsGateway {
    gw: Gateway,
    _up: Upstream,
    tls_port: u16,
    ca: PrivateCa,
    _dir: TempDir,
}

/// A gateway terminating TLS with a leaf for `localhost` from a private CA,
/// and a rule that lets one request through `/v1/auth/` per hour.
fn start() -> TlsGateway {
    let dir = TempDir::new();
    let ca = PrivateCa::new(&dir.0);
    ca.issue("a", "localhost");
    std::fs::copy(dir.0.join("a.pem"), dir.0.join("tls.crt")).unwrap();
    std::fs::copy(dir.0.join("a.key"), dir.0.join("tls.key")).unwrap();
    let up = Upstream::start();
    let tls_port = free_port();
    let d = dir.0.display();
    let server = format!(
        "[server.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncert_file = \"{d}/tls.crt\"\nkey_file = \"{d}/tls.key\"\nwatch_interval = \"1s\""
    );
    let rules = "[[rate_limit.rules]]\nname = \"auth\"\npath_prefix = \"/v1/auth/\"\nlimit = 1\nperiod = \"1h\"";
    let gw = Gateway::start_with(up.port, &server, "", rules);
    TlsGateway {
        gw,
        _up: up,
        tls_port,
        ca,
        _dir: dir,
    }
}

fn der(pem: &Path) -> CertificateDer<'static> {
    let mut reader = BufReader::new(std::fs::File::open(pem).unwrap());
    let first = rustls_pemfile::certs(&mut reader).next();
    first.expect("a certificate").expect("PEM")
}

/// A TLS connection speaking HTTP/1.1, trusting only the private CA.
fn connect(t: &TlsGateway) -> StreamOwned<ClientConnection, TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(der(&t.ca.cert())).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", t.tls_port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok();
    StreamOwned::new(conn, tcp)
}

/// One GET on a TLS connection: the status and the body.
fn get(s: &mut StreamOwned<ClientConnection, TcpStream>, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let mut len = 0;
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The leaf certificate a new connection is served (after one request:
/// the handshake happens on first use).
fn served_now(t: &TlsGateway) -> CertificateDer<'static> {
    let mut c = connect(t);
    assert_eq!(get(&mut c, "/hello").0, 200);
    served(&c)
}

/// The leaf certificate a connection was served.
fn served(s: &StreamOwned<ClientConnection, TcpStream>) -> CertificateDer<'static> {
    s.conn.peer_certificates().expect("a certificate")[0]
        .clone()
        .into_owned()
}

#[test]
fn http2_and_http1_by_alpn_with_the_products_behaviour_over_tls() {
    let t = start();
    let url = |path: &str| format!("https://localhost:{}{path}", t.tls_port);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(t.ca.cert())
            .args(["--resolve", &format!("localhost:{}:127.0.0.1", t.tls_port)])
            .args(args)
            .output()
            .expect("curl is installed (.ci/run installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // ALPN: curl offers h2 and gets it; verified against the private CA.
    let out = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        &url("/hello"),
    ]);
    assert_eq!(out, "200 2");
    let out = curl(&[
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        &url("/hello"),
    ]);
    assert_eq!(out, "1.1");
    // Every upstream dialect becomes the same envelope as over plain HTTP,
    // with its request id, over HTTP/2.
    for case in crate::errors::CASES {
        let path = format!("/errors/{}", case.dialect);
        let args = ["-D", "-", "-H", "accept-encoding: gzip, br", &url(&path)];
        let out = curl(&args);
        let status = format!("HTTP/2 {}", case.status);
        assert!(out.starts_with(&status), "{}: {out}", case.dialect);
        assert!(
            out.contains("x-request-id: req_"),
            "{}: {out}",
            case.dialect
        );
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
        let e = &v["error"];
        assert_eq!(e["type"], case.kind, "{}: {out}", case.dialect);
        assert_eq!(e["code"], case.code, "{}", case.dialect);
        assert_eq!(e["message"], case.message, "{}", case.dialect);
    }
    // A 200 that no rule counts carries its request id and no rate-limit
    // headers.
    let out = curl(&["-D", "-", "-o", "/dev/null", &url("/v1/other")]);
    assert!(out.contains("x-request-id: req_"), "{out}");
    assert!(!out.contains("x-ratelimit"), "{out}");
    // The limiter: one request, then a 429 with Retry-After.
    let out = curl(&["-D", "-", &url("/v1/auth/login")]);
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("x-ratelimit-limit: 1\r\n"), "{out}");
    assert!(out.contains("x-ratelimit-remaining: 0\r\n"), "{out}");
    let out = curl(&["-D", "-", &url("/v1/auth/login")]);
    assert!(out.starts_with("HTTP/2 429"), "{out}");
    assert!(out.contains("retry-after: "), "{out}");
    // Plain HTTP still answers on its own port.
    assert_eq!(t.gw.connect().request("GET", "/hello").status, 200);
    // A client that does not trust the CA is refused by its own check.
    let out = Command::new("curl")
        .args([
            "-sS",
            "--resolve",
            &format!("localhost:{}:127.0.0.1", t.tls_port),
        ])
        .arg(url("/hello"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "no public CA vouches for the test leaf"
    );
}

#[test]
fn rotation_in_place_serves_new_connections_and_keeps_open_ones() {
    let t = start();
    let dir = &t.ca.dir;
    let mut open = connect(&t);
    assert_eq!(get(&mut open, "/hello").0, 200);
    assert_eq!(served(&open), der(&dir.join("a.pem")));

    // As cert-manager does: new files written over the old ones.
    t.ca.issue("b", "localhost");
    std::fs::copy(dir.join("b.pem"), dir.join("tls.crt")).unwrap();
    std::fs::copy(dir.join("b.key"), dir.join("tls.key")).unwrap();
    t.gw.signal("HUP");
    t.gw.wait_for_reloads("success", 1);
    assert_eq!(
        get(&mut open, "/hello").0,
        200,
        "the open connection goes on"
    );
    let mut fresh = connect(&t);
    assert_eq!(get(&mut fresh, "/hello").0, 200);
    assert_eq!(
        served(&fresh),
        der(&dir.join("b.pem")),
        "new connections get the new pair"
    );

    // A certificate with a key that is not its own: refused, counted,
    // logged, and the last good pair keeps serving.
    std::fs::copy(dir.join("a.pem"), dir.join("tls.crt")).unwrap();
    t.gw.signal("HUP");
    t.gw.wait_for_reloads("error", 1);
    assert!(t.gw.log().contains("the key does not fit the certificate"));
    let mut after = connect(&t);
    assert_eq!(get(&mut after, "/hello").0, 200);
    assert_eq!(served(&after), der(&dir.join("b.pem")));
}

#[test]
fn a_bad_pair_at_start_is_an_error_naming_the_file() {
    let dir = TempDir::new();
    let ca = PrivateCa::new(&dir.0);
    let (cert, _) = ca.issue("a", "localhost");
    let (_, other_key) = ca.issue("b", "localhost");
    let config = dir.0.join("t.toml");
    let write = |cert: &Path, key: &Path| {
        let text = format!(
            "[server.tls]\nlisten = \"127.0.0.1:{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\n[upstream]\naddress = \"127.0.0.1:9\"\n",
            free_port(),
            cert.display(),
            key.display()
        );
        std::fs::write(&config, text).unwrap();
    };
    let check = || {
        Command::new(crate::harness::BIN)
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    write(&cert, &other_key);
    let out = check();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("b.key") && err.contains("does not fit"),
        "{err}"
    );
    // Starting with it fails the same way, before serving anything.
    let out = Command::new(crate::harness::BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("b.key") && err.contains("does not fit"),
        "{err}"
    );
    write(&cert, &dir.0.join("missing.key"));
    let out = check();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("server.tls.key_file") && err.contains("missing.key"),
        "{err}"
    );
}

#[test]
fn files_replaced_in_place_are_picked_up_without_a_signal() {
    let t = start();
    let dir = &t.ca.dir;
    assert_eq!(served_now(&t), der(&dir.join("a.pem")));
    t.ca.issue("c", "localhost");
    std::fs::copy(dir.join("c.key"), dir.join("tls.key")).unwrap();
    std::fs::copy(dir.join("c.pem"), dir.join("tls.crt")).unwrap();
    // `watch_interval = "1s"`: the next check sees the change and reloads.
    eventually(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || format!("still the old certificate; log:\n{}", t.gw.log()),
        || (served_now(&t) == der(&dir.join("c.pem"))).then_some(()),
    );
    assert!(t.gw.log().contains("TLS files changed"));
}

#[test]
fn failed_handshakes_are_counted() {
    let t = start();
    // Plain HTTP on the TLS port, and a TLS client that gives up midway.
    for _ in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", t.tls_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let _ = s.read_to_end(&mut Vec::new());
    }
    let series = "tollgate_client_errors_total{kind=\"tls_handshake\"}";
    eventually(
        Duration::from_secs(5),
        POLL,
        || format!("not counted:\n{}", t.gw.scrape()),
        || (metric(&t.gw.scrape(), series) == 3.0).then_some(()),
    );
    // Good handshakes are not.
    assert_eq!(get(&mut connect(&t), "/hello").0, 200);
    assert_eq!(metric(&t.gw.scrape(), series), 3.0);
}
