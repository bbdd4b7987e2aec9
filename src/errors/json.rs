//! JSON written straight to bytes: the envelope's fixed shape, its
//! strings and its `details`. serde_json writes each key, quote and
//! punctuation mark as its own small write and escapes byte by byte;
//! strings that need no escaping (nearly all) go in here with one copy,
//! the others and numbers still through serde_json, so the bytes are the
//! same.

use serde_json::{Map, Value};

/// `{"error":{"type":…,"code":…,"message":…,"request_id":…,"details":…}}`
/// from the four strings in that order, `details` written by the caller.
pub fn write_envelope(out: &mut Vec<u8>, strings: [&str; 4], details: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(br#"{"error":"#);
    write_error_object(out, strings, details);
    out.push(b'}');
}

/// The envelope's inner object, `{"type":…,"code":…,"message":…,
/// "request_id":…,"details":…}`: also a failed item's `error` member.
pub fn write_error_object(
    out: &mut Vec<u8>,
    strings: [&str; 4],
    details: impl FnOnce(&mut Vec<u8>),
) {
    let [kind, code, message, request_id] = strings;
    out.extend_from_slice(br#"{"type":"#);
    push_json_str(out, kind);
    out.extend_from_slice(br#","code":"#);
    push_json_str(out, code);
    out.extend_from_slice(br#","message":"#);
    push_json_str(out, message);
    out.extend_from_slice(br#","request_id":"#);
    push_json_str(out, request_id);
    out.extend_from_slice(br#","details":"#);
    details(out);
    out.push(b'}');
}

/// `s` as a JSON string: one copy when nothing in it needs escaping,
/// serde_json's escaping otherwise.
pub fn push_json_str(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// `value` as compact JSON, the bytes serde_json writes: its strings
/// (keys too) through [`push_json_str`], where serde_json's writer takes
/// each byte through its escape table; numbers through serde_json.
pub fn push_json_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            // Writing a number into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => push_json_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                push_json_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => push_json_object(out, members),
    }
}

/// `members` as a compact JSON object, as [`push_json_value`] writes it.
pub fn push_json_object(out: &mut Vec<u8>, members: &Map<String, Value>) {
    out.push(b'{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_json_str(out, key);
        out.push(b':');
        push_json_value(out, value);
    }
    out.push(b'}');
}

/// Whether JSON needs any byte of `s` escaped (control, `"` or `\`).
///
/// In blocks of 16 (the last one padded with spaces) OR-ed into 16 lanes,
/// with no early exit: the compiler makes each block a handful of SIMD
/// instructions and reduces the lanes once at the end, where a
/// short-circuiting `any`, or a fold that walks the tail byte by byte, costs
/// several instructions per byte (docs/performance-history.md).
fn needs_escape(s: &[u8]) -> bool {
    fn mark(lanes: &mut [u8; 16], block: &[u8]) {
        for (lane, &c) in lanes.iter_mut().zip(block) {
            *lane |= u8::from((c < 0x20) | (c == b'"') | (c == b'\\'));
        }
    }
    let mut lanes = [0u8; 16];
    let mut blocks = s.chunks_exact(16);
    for block in &mut blocks {
        mark(&mut lanes, block);
    }
    let rest = blocks.remainder();
    let mut last = [b' '; 16];
    last[..rest.len()].copy_from_slice(rest);
    mark(&mut lanes, &last);
    lanes.iter().fold(0, |any, &lane| any | lane) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind of value, nested, with strings that need escaping and
    /// numbers of each representation: the same bytes as serde_json.
    #[test]
    fn push_json_value_writes_what_serde_json_writes() {
        let values = [
            serde_json::json!(null),
            serde_json::json!({}),
            serde_json::json!([]),
            serde_json::json!({
                "a": [1, -2, 3.5, 1e300, 18446744073709551615u64, true, false, null],
                "quote \" key": "control \u{1} tab\t é 🦀 \u{2028}",
                "nested": {"x": [{"y": []}, {}], "": ""},
            }),
            serde_json::json!(["x", [["y"]], {"k": {"k": "v"}}]),
        ];
        for value in values {
            let mut ours = Vec::new();
            push_json_value(&mut ours, &value);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&value).unwrap()
            );
        }
    }

    /// Every length around the 16-byte blocks, with each byte that needs
    /// escaping at every position, and none.
    #[test]
    fn needs_escape_finds_every_byte_at_every_position() {
        for len in 0..50 {
            let clean = vec![b'a'; len];
            assert!(!needs_escape(&clean), "len {len}");
            for at in 0..len {
                for special in [0u8, 0x1f, b'"', b'\\'] {
                    let mut s = clean.clone();
                    s[at] = special;
                    assert!(needs_escape(&s), "len {len}, {special:#x} at {at}");
                }
                let mut s = clean.clone();
                s[at] = 0x7f;
                assert!(!needs_escape(&s), "DEL needs no escape in JSON");
            }
        }
    }
}
