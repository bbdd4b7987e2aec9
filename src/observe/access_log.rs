//! Structured logs (docs/metrics.md, "Access log"): one JSON line per request that ends non-2xx
//! (or every request with `log.all_requests`). Only the fields below are
//! ever logged: never bodies, query strings, cookies or credentials.

use std::net::IpAddr;

use time::macros::format_description;
use tracing_subscriber::fmt::time::UtcTime;
use tracing_subscriber::EnvFilter;

use crate::errors::json::push_json_str;

/// What one request's log line says.
#[derive(Debug, Default)]
pub struct AccessRecord<'a> {
    pub method: &'a str,
    /// Path only: the query string is dropped by the caller.
    pub path: &'a str,
    pub status: u16,
    pub route: &'a str,
    pub rule: Option<&'a str>,
    pub client_ip: Option<IpAddr>,
    pub request_id: &'a str,
    pub upstream_status: Option<u16>,
    pub duration_ms: f64,
    pub retry_after: Option<u64>,
    pub error_type: Option<&'a str>,
    pub error_code: Option<&'a str>,
    pub error_message: Option<&'a str>,
    pub upstream_ref: Option<&'a str>,
    pub error_source: Option<&'a str>,
    pub failure: Option<&'a str>,
}

/// Should this request be logged?
pub fn wanted(status: u16, all_requests: bool) -> bool {
    all_requests || !(200..300).contains(&status)
}

/// Whether access lines are written at all (`TOLLGATE_LOG` filters the
/// target `tollgate::access` like any other): when not, the caller skips
/// gathering a line's fields.
pub fn enabled() -> bool {
    tracing::enabled!(target: "tollgate::access", tracing::Level::INFO)
}

/// Write the line to stderr: a JSON object with the keys a `tracing`
/// event formatted by [`init`]'s subscriber has (`timestamp`, `level`,
/// `target`, `message`, then the fields; absent ones left out), written
/// directly into a per-thread buffer and out in one `write`.
///
/// Why not a `tracing` event: tracing-subscriber's JSON formatter checks
/// each small piece it writes for UTF-8 and escapes strings character by
/// character, which cost more than the rest of a 429; this writer costs a
/// tenth of that (docs/performance-history.md: "The access line cost more than
/// the rest of the 429").
pub fn emit(r: &AccessRecord<'_>) {
    LINE.with(|line| {
        let Ok(mut line) = line.try_borrow_mut() else {
            return;
        };
        line.clear();
        write_line(&mut line, r, std::time::SystemTime::now());
        // Logging must never fail a request: a full disk or closed stderr
        // loses the line, nothing else.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), &line);
    });
}

thread_local! {
    static LINE: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(512));
    /// The second the cached text is for, and `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: std::cell::Cell<(u64, [u8; 19])> = const { std::cell::Cell::new((u64::MAX, [0; 19])) };
}

/// One access line, `\n`-terminated, appended to `out`.
fn write_line(out: &mut Vec<u8>, r: &AccessRecord<'_>, now: std::time::SystemTime) {
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    out.extend_from_slice(br#"{"timestamp":""#);
    out.extend_from_slice(&second_text(since_epoch.as_secs()));
    push_thousandths(out, since_epoch.subsec_millis().into());
    out.extend_from_slice(b"Z\"");
    out.extend_from_slice(
        br#","level":"INFO","target":"tollgate::access","message":"request","method":"#,
    );
    push_json_str(out, r.method);
    str_field(out, "path", Some(r.path));
    int_field(out, "status", Some(r.status.into()));
    str_field(out, "route", Some(r.route));
    str_field(out, "rule", r.rule);
    if let Some(ip) = r.client_ip {
        let mut buf = [0u8; 45];
        out.extend_from_slice(br#","client_ip":""#);
        out.extend_from_slice(crate::client::ip_text(ip, &mut buf));
        out.push(b'"');
    }
    str_field(out, "request_id", Some(r.request_id));
    int_field(out, "upstream_status", r.upstream_status.map(u64::from));
    out.extend_from_slice(br#","duration_ms":"#);
    let micros = (r.duration_ms * 1000.0).round() as u64;
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    push_thousandths(out, micros % 1000);
    int_field(out, "retry_after", r.retry_after);
    str_field(out, "error_type", r.error_type);
    str_field(out, "error_code", r.error_code);
    str_field(out, "error_message", r.error_message);
    str_field(out, "upstream_ref", r.upstream_ref);
    str_field(out, "error_source", r.error_source);
    str_field(out, "upstream_failure", r.failure);
    out.extend_from_slice(b"}\n");
}

/// `,"key":"value"` when there is a value. Keys are fixed ASCII names.
fn str_field(out: &mut Vec<u8>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        field_key(out, key);
        push_json_str(out, v);
    }
}

fn int_field(out: &mut Vec<u8>, key: &str, value: Option<u64>) {
    if let Some(v) = value {
        field_key(out, key);
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }
}

fn field_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// `.ddd` for `n` below 1,000 (milliseconds of the timestamp,
/// microseconds of the duration).
fn push_thousandths(out: &mut Vec<u8>, n: u64) {
    let n = n % 1000;
    out.extend_from_slice(&[
        b'.',
        b'0' + (n / 100) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) for a Unix second, made once per second
/// per thread.
fn second_text(secs: u64) -> [u8; 19] {
    let (cached, text) = SECOND.get();
    if cached == secs {
        return text;
    }
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut text = [0u8; 19];
    let mut put = |at: usize, n: u32, width: usize| {
        let mut n = n;
        for i in (0..width).rev() {
            text[at + i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, t.year().unsigned_abs(), 4);
    put(5, u8::from(t.month()).into(), 2);
    put(8, t.day().into(), 2);
    put(11, t.hour().into(), 2);
    put(14, t.minute().into(), 2);
    put(17, t.second().into(), 2);
    for (at, c) in [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')] {
        text[at] = c;
    }
    SECOND.set((secs, text));
    text
}

const DEFAULT_FILTER: &str = "info,pingora_core::protocols::http::v1::server=error";

/// JSON lines on stderr, UTC RFC 3339 timestamps with milliseconds.
/// `TOLLGATE_LOG` (an `EnvFilter` directive) overrides the default.
///
/// The default silences Pingora's HTTP/1 server module below ERROR: its
/// only WARN is "Respond header is already sent", which tollgate causes on
/// purpose when it answers an upstream error with an empty body itself.
pub fn init() {
    let timer = UtcTime::new(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ));
    let filter =
        EnvFilter::try_from_env("TOLLGATE_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_timer(timer)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn line(r: &AccessRecord<'_>, now: std::time::SystemTime) -> serde_json::Value {
        let mut out = Vec::new();
        write_line(&mut out, r, now);
        assert_eq!(out.last(), Some(&b'\n'), "one line");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&out).expect("a JSON object")
    }

    #[test]
    fn a_full_line_has_every_field_and_escapes_what_came_from_outside() {
        let r = AccessRecord {
            method: "GET",
            path: "/a\"b\\c",
            status: 429,
            route: "login",
            rule: Some("per_ip"),
            client_ip: Some("2001:db8::1".parse().unwrap()),
            request_id: "req_1",
            upstream_status: Some(502),
            duration_ms: 12.3456,
            retry_after: Some(7),
            error_type: Some("rate_limit_error"),
            error_code: Some("rate_limit_exceeded"),
            error_message: Some("line\nbreak \u{1} \"quoted\" é"),
            upstream_ref: Some("ev-9"),
            error_source: Some("flat"),
            failure: Some("timeout"),
        };
        // 2026-11-24T10:20:30.045Z
        let now = UNIX_EPOCH + Duration::from_millis(1_795_515_630_045);
        let v = line(&r, now);
        assert_eq!(v["timestamp"], "2026-11-24T10:20:30.045Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "tollgate::access");
        assert_eq!(v["message"], "request");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/a\"b\\c");
        assert_eq!(v["status"], 429);
        assert_eq!(v["route"], "login");
        assert_eq!(v["rule"], "per_ip");
        assert_eq!(v["client_ip"], "2001:db8::1");
        assert_eq!(v["request_id"], "req_1");
        assert_eq!(v["upstream_status"], 502);
        assert_eq!(v["duration_ms"], 12.346);
        assert_eq!(v["retry_after"], 7);
        assert_eq!(v["error_type"], "rate_limit_error");
        assert_eq!(v["error_code"], "rate_limit_exceeded");
        assert_eq!(v["error_message"], "line\nbreak \u{1} \"quoted\" é");
        assert_eq!(v["upstream_ref"], "ev-9");
        assert_eq!(v["error_source"], "flat");
        assert_eq!(v["upstream_failure"], "timeout");
        assert_eq!(v.as_object().unwrap().len(), 20);
    }

    #[test]
    fn absent_fields_are_left_out() {
        let r = AccessRecord {
            method: "POST",
            path: "/",
            status: 500,
            route: "default",
            request_id: "r",
            duration_ms: 0.0004,
            ..AccessRecord::default()
        };
        let v = line(&r, UNIX_EPOCH);
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["duration_ms"], 0.0);
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for absent in [
            "rule",
            "client_ip",
            "upstream_status",
            "retry_after",
            "error_type",
        ] {
            assert!(!keys.contains(&absent), "{absent} in {keys:?}");
        }
    }

    /// The cached per-second text agrees with `time`'s RFC 3339 formatting
    /// across years, leap days and month ends, and the cache follows the
    /// clock (also backwards).
    #[test]
    fn timestamps_match_rfc3339_across_the_calendar() {
        let fmt = time::format_description::well_known::Rfc3339;
        let mut secs: u64 = 0;
        while secs < 4_200_000_000 {
            for s in [secs, secs + 59, secs + 86_399, secs] {
                let expected = time::OffsetDateTime::from_unix_timestamp(s as i64)
                    .unwrap()
                    .format(&fmt)
                    .unwrap();
                let got = second_text(s);
                assert_eq!(std::str::from_utf8(&got).unwrap(), &expected[..19], "{s}");
            }
            secs += 7_776_061; // ~90 days and a bit: every month and weekday shifts
        }
        // 2024-02-29 and the day after.
        assert_eq!(&second_text(1_709_208_000), b"2024-02-29T12:00:00");
        assert_eq!(&second_text(1_709_251_200), b"2024-03-01T00:00:00");
    }
}
