//! Real processes on loopback: the `tollgate` binary, its demo upstream,
//! and a small raw HTTP/1.1 client that sees framing exactly as sent.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// A port nothing listens on, never handed out twice in this test run:
/// tests run in parallel, the kernel may offer a just-released port again,
/// and tollgate's listeners use SO_REUSEPORT, so two processes given the
/// same port would share it silently instead of failing to bind.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Poll `check` every `every` until it gives a value, for at most
/// `within`; then panic with `what` (a closure, so it can show the state
/// at the time, e.g. a log).
pub fn eventually<T>(
    within: Duration,
    every: Duration,
    what: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "not within {within:?}: {}",
            what()
        );
        std::thread::sleep(every);
    }
}

/// How often [`eventually`] polls a local process.
pub const POLL: Duration = Duration::from_millis(20);

pub fn wait_for_port(port: u16, within: Duration) {
    eventually(
        within,
        POLL,
        || format!("nothing listens on port {port}"),
        || TcpStream::connect(("127.0.0.1", port)).ok(),
    );
}

/// A child process killed on drop.
pub struct Proc {
    pub child: Child,
    pub log: Option<PathBuf>,
}

/// Send a signal (`"HUP"`, `"TERM"`, ...) to a process.
pub fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(p.child.id().to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{sig}");
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Upstream {
    pub port: u16,
    _proc: Proc,
}

impl Upstream {
    /// Complete requests the upstream has received (its `/stats`).
    pub fn requests_seen(&self) -> u64 {
        let r = get(self.port, "/stats").expect("upstream stats");
        r.json()["requests"].as_u64().expect("a count")
    }

    /// Connections the upstream has accepted (its `/stats`, which opens
    /// one itself).
    pub fn connections_seen(&self) -> u64 {
        let r = get(self.port, "/stats").expect("upstream stats");
        r.json()["connections"].as_u64().expect("a count")
    }

    pub fn start() -> Upstream {
        let port = free_port();
        let child = Command::new(BIN)
            .args(["demo-upstream", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the demo upstream");
        wait_for_port(port, Duration::from_secs(10));
        Upstream {
            port,
            _proc: Proc { child, log: None },
        }
    }
}

pub struct Gateway {
    pub port: u16,
    pub admin: u16,
    pub upstream_port: u16,
    pub proc: Proc,
    dir: TempDir,
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "tollgate-test-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Gateway {
    /// Start the gateway with `[server]` filled in for fresh loopback ports
    /// and `[upstream] address` pointing at `upstream_port`; `extra` is
    /// appended TOML (rules, routes, more `[upstream]` keys via `upstream_extra`).
    pub fn start(upstream_port: u16, upstream_extra: &str, extra: &str) -> Gateway {
        Gateway::start_with(upstream_port, "", upstream_extra, extra)
    }

    /// Like [`Gateway::start`], with more `[server]` keys.
    pub fn start_with(
        upstream_port: u16,
        server_extra: &str,
        upstream_extra: &str,
        extra: &str,
    ) -> Gateway {
        let dir = TempDir::new();
        let mut gw = Gateway {
            port: free_port(),
            admin: free_port(),
            upstream_port,
            proc: Proc {
                child: Command::new("true").spawn().expect("spawn"),
                log: None,
            },
            dir,
        };
        gw.write_config(server_extra, upstream_extra, extra);
        gw.proc = gw.spawn(&[]);
        gw.wait_ready();
        gw
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.0.join("tollgate.toml")
    }

    /// (Re)write the config file for this gateway's ports. `server_extra`
    /// may set `admin_listen` itself, writing `{ADMIN}` for the port.
    pub fn write_config(&self, server_extra: &str, upstream_extra: &str, extra: &str) {
        let (port, admin, upstream_port) = (self.port, self.admin, self.upstream_port);
        let upgrade_sock = self.dir.0.join("upgrade.sock");
        let server_extra = server_extra.replace("{ADMIN}", &admin.to_string());
        let admin_line = if server_extra.contains("admin_listen") {
            String::new()
        } else {
            format!("admin_listen = \"127.0.0.1:{admin}\"\n")
        };
        let toml = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n{admin_line}threads = 1\nupgrade_sock = \"{}\"\n{server_extra}\n\n[upstream]\naddress = \"127.0.0.1:{upstream_port}\"\n{upstream_extra}\n{extra}\n",
            upgrade_sock.display()
        );
        std::fs::write(self.config_path(), toml).expect("write config");
    }

    /// Start a tollgate process on this gateway's config.
    pub fn spawn(&self, extra_args: &[&str]) -> Proc {
        let log = self.dir.0.join(format!("stderr-{}.log", free_port()));
        let child = Command::new(BIN)
            .arg("--config")
            .arg(self.config_path())
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start tollgate");
        Proc {
            child,
            log: Some(log),
        }
    }

    pub fn signal(&self, sig: &str) {
        signal(&self.proc, sig);
    }

    fn wait_ready(&self) {
        eventually(
            Duration::from_secs(15),
            POLL,
            || format!("tollgate not ready; log:\n{}", self.log()),
            || get(self.admin, "/readyz").ok().filter(|r| r.status == 200),
        );
        wait_for_port(self.port, Duration::from_secs(5));
    }

    /// Reloads counted with this result (`"success"` or `"error"`).
    pub fn reloads(&self, result: &str) -> u64 {
        let series = format!("tollgate_config_reloads_total{{result=\"{result}\"}}");
        metric(&self.scrape(), &series) as u64
    }

    /// Wait until `n` reloads with this result have been counted.
    pub fn wait_for_reloads(&self, result: &str, n: u64) {
        eventually(
            Duration::from_secs(10),
            POLL,
            || format!("no {result} reload; log:\n{}", self.log()),
            || (self.reloads(result) >= n).then_some(()),
        );
    }

    pub fn log(&self) -> String {
        self.proc
            .log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// The admin listener's `/metrics` text.
    pub fn scrape(&self) -> String {
        let r = get(self.admin, "/metrics").expect("scrape");
        assert_eq!(r.status, 200);
        assert!(r
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")));
        String::from_utf8(r.body).expect("utf-8")
    }

    pub fn connect(&self) -> Conn {
        Conn::open(self.port)
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub chunked: bool,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        let s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).expect("connect");
        Conn::from_stream(s)
    }

    /// The connection itself, for reading what comes after.
    pub fn into_stream(self) -> TcpStream {
        self.reader.into_inner()
    }

    pub fn from_stream(s: TcpStream) -> Conn {
        s.set_read_timeout(Some(Duration::from_secs(20))).ok();
        Conn {
            reader: BufReader::new(s),
        }
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Response> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n");
        let mut has_len = false;
        for (k, v) in headers {
            has_len |= k.eq_ignore_ascii_case("content-length")
                || k.eq_ignore_ascii_case("transfer-encoding");
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !has_len && !body.is_empty() {
            req.push_str(&format!("content-length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let s = self.reader.get_mut();
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        self.read_response(method == "HEAD")
    }

    pub fn request(&mut self, method: &str, path: &str) -> Response {
        self.send(method, path, &[], b"").expect("response")
    }

    /// Send raw bytes (for chunked uploads), then read one response.
    pub fn raw(&mut self, bytes: &[u8]) -> std::io::Result<Response> {
        self.reader.get_mut().write_all(bytes)?;
        self.read_response(false)
    }

    /// Read one more response (after pipelined requests sent with `raw`).
    pub fn read(&mut self) -> std::io::Result<Response> {
        self.read_response(false)
    }

    fn read_response(&mut self, head_only: bool) -> std::io::Result<Response> {
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "closed",
                ));
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let mut hs = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut hs);
        parsed
            .parse(&head)
            .map_err(|e| bad(format!("bad response head: {e}")))?;
        let status = parsed.code.unwrap_or(0);
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let mut body = Vec::new();
        if head_only || status == 204 || status == 304 || status < 200 {
            // no body
        } else if chunked {
            loop {
                let mut line = String::new();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad(format!("bad chunk size line {line:?}")))?;
                let mut chunk = vec![0u8; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if &chunk[size..] != b"\r\n" {
                    return Err(bad("chunk not followed by CRLF".into()));
                }
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(len) = get("content-length") {
            let len: usize = len
                .trim()
                .parse()
                .map_err(|_| bad("bad content-length".into()))?;
            body.resize(len, 0);
            self.reader.read_exact(&mut body)?;
        } else {
            self.reader.read_to_end(&mut body)?;
        }
        Ok(Response {
            status,
            headers,
            body,
            chunked,
        })
    }
}

/// Send `raw` on a fresh connection and read the answer's status line; the
/// reader stays open for the rest of the answer (streams, upgrades).
pub fn send_raw_read_status(port: u16, raw: &[u8]) -> (BufReader<TcpStream>, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    s.write_all(raw).expect("send");
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("a status line");
    (reader, status_line)
}

/// One request on a fresh connection.
pub fn get(port: u16, path: &str) -> std::io::Result<Response> {
    let s = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut c = Conn {
        reader: BufReader::new(s),
    };
    c.send("GET", path, &[("connection", "close")], b"")
}

/// Assert the canonical envelope's shape and return its inner object.
pub fn envelope(r: &Response) -> serde_json::Map<String, serde_json::Value> {
    assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
    assert!(
        r.header("content-encoding").is_none(),
        "stale content-encoding: {r:?}"
    );
    let v = r.json();
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "only `error` at the top: {v}");
    let e = obj["error"]
        .as_object()
        .expect("error is an object")
        .clone();
    assert_eq!(e.len(), 5, "five fields: {v}");
    for k in ["type", "code", "message", "request_id"] {
        let s = e[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} is a string: {v}"));
        assert!(!s.is_empty(), "{k} is non-empty: {v}");
    }
    assert!(
        e["details"].is_object() || e["details"].is_array() || e["details"].is_null(),
        "details: {v}"
    );
    e
}

/// The value of one series (`name{labels}`, exactly as exposed) in a
/// Prometheus text scrape.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("no series {series}"))
        .trim()
        .parse()
        .expect("a number")
}

/// A checker (promtool, systemd-analyze) exited 0 and said nothing.
pub fn assert_quiet_success(out: &std::process::Output, what: &str) {
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "{what}: {said}"
    );
}

/// Serializes the tests that time requests against a bound and the tests
/// that load the machine (Prometheus, a Redis Cluster, an upgrade), so a
/// busy 2-core CI machine cannot push a timed request past its bound.
/// Raises this process's open-files limit to `wanted` (at most the hard
/// limit); a gateway started afterwards inherits it.
pub fn raise_open_files_limit(wanted: usize) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to an rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        let wanted = (wanted as libc::rlim_t).min(limit.rlim_max);
        if limit.rlim_cur < wanted {
            limit.rlim_cur = wanted;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
    }
}

pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A throwaway private CA made with the `openssl` CLI, which issues leaf
/// certificates for a DNS name (webpki refuses a self-signed CA
/// certificate used as the server's own).
pub struct PrivateCa {
    pub dir: PathBuf,
}

impl PrivateCa {
    pub fn new(dir: &std::path::Path) -> PrivateCa {
        let ca = PrivateCa {
            dir: dir.to_path_buf(),
        };
        ca.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=tollgate test CA",
        ]);
        ca
    }

    /// The CA certificate (PEM), for clients to trust.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issue `NAME.pem` and `NAME.key` for `dns`; returns their paths.
    pub fn issue(&self, name: &str, dns: &str) -> (PathBuf, PathBuf) {
        let ext = format!("{name}.ext");
        std::fs::write(
            self.dir.join(&ext),
            format!("subjectAltName=DNS:{dns}\nbasicConstraints=CA:FALSE\n"),
        )
        .expect("write the extensions");
        let (key, csr, pem) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
        );
        let subject = format!("/CN={dns}");
        self.openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
            &subject,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ]);
        (self.dir.join(pem), self.dir.join(key))
    }

    fn openssl(&self, args: &[&str]) {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed (.ci/run installs it)");
        assert!(status.success(), "openssl {args:?}");
    }
}

/// Serves each connection to `listener` on a thread of its own: reads a
/// request head, then hands the connection and the head to `answer`
/// (upstreams that tests need to misbehave in their own way).
pub fn serve_heads(listener: TcpListener, answer: fn(BufReader<TcpStream>, String)) {
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn);
                let mut head = String::new();
                while !head.ends_with("\r\n\r\n") {
                    if reader.read_line(&mut head).unwrap_or(0) == 0 {
                        return;
                    }
                }
                answer(reader, head);
            });
        }
    });
}
