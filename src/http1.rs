//! A minimal HTTP/1.1 server toolkit for the two small servers tollgate
//! runs besides the proxy: the admin listener and the demo upstream. Raw
//! tokio, so each can control framing exactly (and the demo can misbehave).

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Longest request head accepted; past it the connection is dropped.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size line accepted.
const MAX_CHUNK_LINE: usize = 1024;

/// A request head, with the body read and dropped (only its length kept).
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
    pub close: bool,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k == name).then_some(v)
        })
    }
    pub fn param_u64(&self, name: &str, default: u64) -> u64 {
        self.param(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }
}

/// Read one request (head and body) off the connection; `None` at EOF.
pub async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Request::new(&mut headers);
        if let httparse::Status::Complete(head_len) =
            parsed.parse(buf).map_err(|_| bad("bad request"))?
        {
            let target = parsed.path.unwrap_or("/").to_string();
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p.to_string(), q.to_string()),
                None => (target, String::new()),
            };
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
            let mut req = Request {
                method: parsed.method.unwrap_or("GET").to_string(),
                path,
                query,
                close: get("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")),
                headers: headers.clone(),
                body_len: 0,
            };
            buf.drain(..head_len);
            if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
                req.body_len = read_chunked(stream, buf).await?;
            } else {
                let n: usize = get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                discard(stream, buf, n).await?;
                req.body_len = n;
            }
            return Ok(Some(req));
        }
        if buf.len() > MAX_HEAD {
            return Err(bad("request head too large"));
        }
        if read_more(stream, buf).await? == 0 {
            return Ok(None);
        }
    }
}

/// Drop the next `n` bytes of the connection, never holding more than one
/// read's worth: a body is counted, not kept.
async fn discard(stream: &mut TcpStream, buf: &mut Vec<u8>, mut n: usize) -> std::io::Result<()> {
    loop {
        let take = n.min(buf.len());
        buf.drain(..take);
        n -= take;
        if n == 0 {
            return Ok(());
        }
        if read_more(stream, buf).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "body cut short",
            ));
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16384];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// Read through a chunked body (dropping it), returning its length.
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunk");
    let mut total: usize = 0;
    loop {
        let line_end = loop {
            if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                break i;
            }
            if buf.len() > MAX_CHUNK_LINE || read_more(stream, buf).await? == 0 {
                return Err(bad());
            }
        };
        let size_text = std::str::from_utf8(&buf[..line_end]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        buf.drain(..line_end + 2);
        // The chunk, then its CRLF (after the last chunk: the final CRLF,
        // as no trailers are expected).
        discard(stream, buf, size).await?;
        discard(stream, buf, 2).await?;
        total = total.saturating_add(size);
        if size == 0 {
            return Ok(total);
        }
    }
}

pub fn head(status: u16, headers: &[(&str, String)]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status,
        crate::errors::reason_phrase(status)
    )
    .into_bytes();
    for (k, v) in headers {
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

pub fn full(status: u16, ctype: &str, extra: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut headers = vec![
        ("content-type", ctype.to_string()),
        ("content-length", body.len().to_string()),
    ];
    headers.extend(extra.iter().cloned());
    let mut out = head(status, &headers);
    out.extend_from_slice(body);
    out
}

/// A whole response with a chunked body cut into pieces of `piece` bytes.
pub fn chunked(status: u16, ctype: &str, body: &[u8], piece: usize) -> Vec<u8> {
    let headers = [
        ("content-type", ctype.to_string()),
        ("transfer-encoding", "chunked".to_string()),
    ];
    let mut out = head(status, &headers);
    for part in body.chunks(piece.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}
