//! A small HTTP/1.1 upstream that answers in every error dialect of
//! docs/errors.md (and a few failure modes), so the default config shows normalization
//! working and the integration tests have a real server process to hit.
//!
//! Raw tokio rather than a framework, so it can misbehave on purpose:
//! `Content-Length: 0`, chunked and close-delimited bodies, resets, garbage.
//!
//! | path | answer |
//! |---|---|
//! | `/errors/{dialect}?status=N` | that dialect (see [`DIALECTS`]) with status N |
//! | `/slow?ms=N` | 200 after N ms |
//! | `/serial?ms=N` | 200 after N ms of a worker that serves one such request at a time (a saturated upstream) |
//! | `/bytes?n=N[&chunked=1]` | 200 with N deterministic bytes |
//! | `/custom-head` | 200 with the reason phrase `Fine Thanks` and an `X-Upstream-Note` header |
//! | `/drip?n=N&ms=M` | 200 `text/event-stream`, chunked: the header, then N events M ms apart |
//! | `/echo` | 200 JSON: method, path, the request headers, body length |
//! | `/reset?status=N` | status N, `Content-Length: 100`, 10 bytes, then close |
//! | `/reuse-hint[?connection=V&keep_alive=V]` | 200 with those `Connection` and `Keep-Alive` values, the connection left open |
//! | `/garbage` | bytes that are not HTTP |
//! | `/v1/ocr[?gzip=1&chunked=1&pad=N]` | 200 with `ocr_data` items, one failed (`INVALID_DOC`), empty strings for success; `pad` adds an N-byte member |
//! | `/v1/ocr/not-array` | 200 whose `ocr_data` is an object, not an array |
//! | `/v1/address/match` | 200 with `match_data` items, one failed (`"422"`), `null` for success |
//! | `/stats` | `{"requests": N, "connections": M}`: complete requests received before this one, connections accepted (this one included) |
//! | anything else | 200 `{"ok":true,...}` |

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::http1::{chunked, full, head, read_request, Request};
use tokio::net::{TcpListener, TcpStream};

/// `/serial`'s one worker: requests past the first wait in line, so the
/// answer time grows with the number waiting, as a saturated upstream's does.
static SERIAL_WORKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Dialects served under `/errors/`.
pub const DIALECTS: &[&str] = &[
    "canonical",
    "flat",
    "flat-code",
    "validation",
    "event",
    "message",
    "problem",
    "other",
    "text",
    "html",
    "empty",
    "empty-chunked",
    "invalid-json",
    "binary",
    "gzip",
    "deflate",
    "br",
    "large",
    "chunked",
    "close",
    "bomb",
];

/// Serve forever on `addr`.
pub async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!(
        "demo upstream listening on http://{}",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        CONNECTIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            let _ = connection(stream).await;
        });
    }
}

/// Complete requests received (for tests that check what got through).
static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Connections accepted (for tests of connection reuse).
static CONNECTIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

async fn connection(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let Some(req) = read_request(&mut stream, &mut buf).await? else {
            return Ok(());
        };
        if req.path != "/stats" {
            REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let keep = respond(&mut stream, &req).await?;
        if !keep || req.close {
            return Ok(());
        }
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// The deterministic byte pattern `/bytes` serves.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// Write the response; returns whether the connection may be reused.
async fn respond(stream: &mut TcpStream, req: &Request) -> std::io::Result<bool> {
    let json = "application/json";
    if let Some(dialect) = req.path.strip_prefix("/errors/") {
        let status = req.param_u64("status", 0) as u16;
        return error_dialect(stream, dialect, status).await;
    }
    let out = match req.path.as_str() {
        "/v1/ocr" => {
            let pad = "x".repeat(req.param_u64("pad", 0) as usize);
            let body = format!(
                r#"{{"request_id":"ocr-7","ocr_data":[{{"document_id":"d1","data":{{"name":"Ann Lee","dob":"1990-01-02"}},"error_code":"","error_reason":""}},{{"document_id":"d2","data":null,"error_code":"INVALID_DOC","error_reason":"multiple people"}},{{"document_id":"d3","data":{{"name":"Bo Chen","dob":"1985-07-30"}},"error_code":"","error_reason":""}}],"pad":"{pad}"}}"#
            );
            let body = if req.param("gzip") == Some("1") {
                gzip(body.as_bytes())
            } else {
                body.into_bytes()
            };
            let encoding = req.param("gzip").map(|_| ("content-encoding", "gzip".to_string()));
            if req.param("chunked") == Some("1") {
                let mut out = head(
                    200,
                    &[
                        ("content-type", json.into()),
                        ("transfer-encoding", "chunked".into()),
                    ]
                    .into_iter()
                    .chain(encoding)
                    .collect::<Vec<_>>(),
                );
                for piece in body.chunks(61) {
                    out.extend_from_slice(format!("{:X}\r\n", piece.len()).as_bytes());
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                out
            } else {
                full(200, json, &encoding.into_iter().collect::<Vec<_>>(), &body)
            }
        }
        "/v1/ocr/not-array" => full(200, json, &[], br#"{"ocr_data":{"error_code":"INVALID_DOC"}}"#),
        "/v1/address/match" => full(200, json, &[], br#"{"match_data":[{"index":0,"address":"1 Main St","similarity_score":0.97,"error_code":null,"error_message":null},{"index":1,"address":"","similarity_score":null,"error_code":"422","error_message":"Unprocessable Entity: the address has no street"}],"count":2}"#),
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(req.param_u64("ms", 1000))).await;
            full(200, json, &[], br#"{"ok":true,"slow":true}"#)
        }
        "/serial" => {
            let _one_at_a_time = SERIAL_WORKER.lock().await;
            tokio::time::sleep(Duration::from_millis(req.param_u64("ms", 10))).await;
            full(200, json, &[], br#"{"ok":true,"serial":true}"#)
        }
        "/bytes" => {
            let body = pattern(req.param_u64("n", 1024) as usize);
            if req.param("chunked") == Some("1") {
                chunked(200, "application/octet-stream", &body, 7919)
            } else {
                full(200, "application/octet-stream", &[], &body)
            }
        }
        "/reuse-hint" => {
            let hints = [("connection", "connection"), ("keep-alive", "keep_alive")];
            let headers: Vec<(&str, String)> = hints
                .into_iter()
                .filter_map(|(name, param)| Some((name, req.param(param)?.to_string())))
                .collect();
            full(200, json, &headers, br#"{"ok":true}"#)
        }
        "/custom-head" => {
            let body = br#"{"ok":true}"#;
            let mut out = format!(
                "HTTP/1.1 200 Fine Thanks\r\nContent-Type: application/json\r\nX-Upstream-Note: kept\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(body);
            out
        }
        "/drip" => {
            let (n, ms) = (req.param_u64("n", 3), req.param_u64("ms", 100));
            let mut out = head(
                200,
                &[
                    ("content-type", "text/event-stream".into()),
                    ("transfer-encoding", "chunked".into()),
                ],
            );
            stream.write_all(&out).await?;
            for i in 0..n {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let event = format!("data: {i}\n\n");
                out = format!("{:X}\r\n{event}\r\n", event.len()).into_bytes();
                stream.write_all(&out).await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
            return Ok(true);
        }
        "/echo" => {
            let headers: serde_json::Map<String, serde_json::Value> = req
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect();
            let body = serde_json::json!({
                "method": req.method, "path": req.path, "headers": headers, "body_len": req.body_len,
            });
            full(200, json, &[], body.to_string().as_bytes())
        }
        "/reset" => {
            let status = req.param_u64("status", 200) as u16;
            let mut out = head(
                status,
                &[
                    ("content-type", json.into()),
                    ("content-length", "100".into()),
                ],
            );
            out.extend_from_slice(b"{\"partial\"");
            stream.write_all(&out).await?;
            stream.flush().await?;
            return Ok(false);
        }
        "/stats" => {
            let n = REQUESTS.load(std::sync::atomic::Ordering::Relaxed);
            let c = CONNECTIONS.load(std::sync::atomic::Ordering::Relaxed);
            let stats = format!("{{\"requests\":{n},\"connections\":{c}}}");
            full(200, json, &[], stats.as_bytes())
        }
        "/garbage" => {
            stream.write_all(b"THIS IS NOT HTTP\r\n\r\n").await?;
            return Ok(false);
        }
        _ => {
            let body = serde_json::json!({"ok": true, "path": req.path, "method": req.method});
            full(200, json, &[], body.to_string().as_bytes())
        }
    };
    stream.write_all(&out).await?;
    Ok(true)
}

async fn error_dialect(
    stream: &mut TcpStream,
    dialect: &str,
    status: u16,
) -> std::io::Result<bool> {
    let json = "application/json";
    let pick = |default: u16| if status == 0 { default } else { status };
    let flat = br#"{"error_code":"INVALID_DOC","error_message":"Document type is not supported"}"#;
    let out = match dialect {
        "canonical" => full(pick(402), json, &[], br#"{"error":{"type":"card_error","code":"card_declined","message":"The card was declined.","request_id":"up_123","details":{"decline_code":"insufficient_funds"}}}"#),
        "flat" => full(pick(400), json, &[], flat),
        "flat-code" => full(pick(401), json, &[], br#"{"error_code":"401","error_message":"Authentication Error: invalid API key"}"#),
        "validation" => full(pick(422), json, &[], br#"{"message":"One or more request parameters are invalid.","validation_errors":["ID is required","Name must be at most 64 characters"]}"#),
        "event" => full(pick(500), json, &[], br#"{"eventID":"c3cc1b5e-5f0a-4b43-9d1c-0a4b1f0e2d7a","message":"Failed to do something"}"#),
        "message" => full(pick(403), json, &[], br#"{"message":"This key cannot read documents."}"#),
        "problem" => full(pick(409), "application/problem+json", &[], br#"{"type":"https://example.com/probs/out-of-credit","title":"You do not have enough credit.","status":409,"detail":"Your current balance is 30, but that costs 50.","instance":"/account/12345/msgs/abc","balance":30}"#),
        "other" => full(pick(418), json, &[], br#"{"error":"teapot","hint":"try coffee"}"#),
        "text" => full(pick(503), "text/plain", &[], b"upstream connect error or disconnect/reset before headers\n"),
        "html" => full(pick(502), "text/html", &[], b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"),
        "empty" => full(pick(503), "text/plain", &[], b""),
        "empty-chunked" => {
            let mut out = head(pick(500), &[("transfer-encoding", "chunked".into())]);
            out.extend_from_slice(b"0\r\n\r\n");
            out
        }
        "invalid-json" => full(pick(500), json, &[], b"{\"message\": \"oops"),
        "binary" => full(pick(500), "application/octet-stream", &[], &[0, 159, 146, 150, 255, 0]),
        "gzip" => full(pick(400), json, &[("content-encoding", "gzip".into())], &gzip(flat)),
        "deflate" => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = e.write_all(flat);
            full(pick(400), json, &[("content-encoding", "deflate".into())], &e.finish().unwrap_or_default())
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                let _ = w.write_all(flat);
            }
            full(pick(400), json, &[("content-encoding", "br".into())], &out)
        }
        "large" => {
            let mut body = br#"{"message":""#.to_vec();
            body.extend(std::iter::repeat_n(b'x', 200_000));
            body.extend_from_slice(br#""}"#);
            full(pick(500), json, &[], &body)
        }
        "chunked" => {
            let body = br#"{"message":"Sent in pieces","validation_errors":["first","second"]}"#;
            chunked(pick(422), json, body, 9)
        }
        "close" => {
            let mut out = head(pick(500), &[("content-type", json.into()), ("connection", "close".into())]);
            out.extend_from_slice(br#"{"message":"Closed when done"}"#);
            stream.write_all(&out).await?;
            stream.shutdown().await?;
            return Ok(false);
        }
        "bomb" => {
            // 64 MiB of spaces, about 64 KiB gzipped; made once.
            static BOMB: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            let bomb = BOMB.get_or_init(|| gzip(&vec![b' '; 64 * 1024 * 1024]));
            full(pick(500), json, &[("content-encoding", "gzip".into())], bomb)
        }
        _ => full(404, json, &[], br#"{"message":"No such dialect."}"#),
    };
    stream.write_all(&out).await?;
    Ok(true)
}
