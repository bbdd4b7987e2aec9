//! Per-item errors inside 2xx bodies, on routes that opt in with
//! `item_errors` (docs/errors.md, "Per-item errors"): a failed item's
//! `error_code`, `error_message` and `error_reason` become one canonical
//! `error` object; everything else in the body keeps its value.
//!
//! The body is read as raw JSON values ([`RawValue`]), not as a tree: only
//! the failed items are written anew, every other member and item goes out
//! as the bytes the upstream sent (member order, number spelling and
//! whitespace inside them included).

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::decode::{decode, Decoded};
use super::json::{push_json_str, push_json_value, write_error_object};
use super::{ErrorClass, ErrorTable};

/// An opted-in 2xx body held until its end, bounded: past `max_body`
/// bytes (as received) it is given back to stream on untouched.
#[derive(Debug)]
pub struct HeldBody {
    content_encoding: Option<String>,
    body: Vec<u8>,
    max_body: usize,
}

/// What to do with a piece of a held body.
#[derive(Debug, PartialEq, Eq)]
pub enum Hold {
    /// Still within the bound: keep holding.
    Held,
    /// Over the bound: these bytes (all held so far, this piece included)
    /// go out now, and the rest streams.
    GiveBack(Vec<u8>),
}

impl HeldBody {
    pub fn new(content_encoding: Option<&str>, max_body: usize) -> HeldBody {
        HeldBody {
            content_encoding: content_encoding.map(str::to_owned),
            body: Vec::new(),
            max_body,
        }
    }

    pub fn push(&mut self, piece: &[u8]) -> Hold {
        self.body.extend_from_slice(piece);
        if self.body.len() > self.max_body {
            Hold::GiveBack(std::mem::take(&mut self.body))
        } else {
            Hold::Held
        }
    }

    /// The whole body is in: the rewritten body, or the bytes as held when
    /// it is not for rewriting (not JSON, not an object, no named array,
    /// over the bound once decoded, undecodable).
    pub fn finish(self, arrays: &[String], request_id: &str, table: &ErrorTable) -> Finished {
        let checked = match decode(&self.body, self.content_encoding.as_deref(), self.max_body) {
            Decoded::Plain(plain) => check(&plain, arrays, request_id, table),
            Decoded::TooLarge | Decoded::Failed => None,
        };
        match checked {
            Some(checked) => Finished::Checked(checked),
            None => Finished::Untouched(self.body),
        }
    }
}

/// The end of a held body.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// Examined: send `body` (decoded, rewritten where items failed).
    Checked(Checked),
    /// Not for rewriting: send these bytes as they came (still encoded).
    Untouched(Vec<u8>),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    /// Items that had failed (`X-Item-Errors`).
    pub failed: u64,
    /// The body, decoded; rewritten when any item failed.
    pub body: Vec<u8>,
}

/// Whether a `Content-Type` is JSON: `application/json` or any `+json`.
pub fn is_json_media_type(content_type: &str) -> bool {
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || (media.contains('/') && media.ends_with("+json"))
}

/// Rewrite the failed items of the named arrays of a decoded body. `None`:
/// the body is not a JSON object, or none of the named members is an
/// array.
pub fn check(
    body: &[u8],
    arrays: &[String],
    request_id: &str,
    table: &ErrorTable,
) -> Option<Checked> {
    let Members(members) = serde_json::from_slice(body).ok()?;
    let is_named_array = |(name, value): &(Cow<str>, &RawValue)| {
        arrays.iter().any(|a| a == name) && value.get().trim_start().starts_with('[')
    };
    if !members.iter().any(is_named_array) {
        return None;
    }
    let writer = ItemWriter { request_id, table };
    let mut failed = 0;
    let mut out = Vec::with_capacity(body.len() + 256);
    out.push(b'{');
    for (i, member) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let (name, value) = member;
        push_json_str(&mut out, name);
        out.push(b':');
        if !is_named_array(member) {
            out.extend_from_slice(value.get().as_bytes());
            continue;
        }
        // A named member that starts like an array but is not one cannot
        // be in a body that parsed.
        let items: Vec<&RawValue> = serde_json::from_str(value.get()).ok()?;
        out.push(b'[');
        for (j, item) in items.iter().enumerate() {
            if j > 0 {
                out.push(b',');
            }
            if writer.write_if_failed(&mut out, item) {
                failed += 1;
            } else {
                out.extend_from_slice(item.get().as_bytes());
            }
        }
        out.push(b']');
    }
    out.push(b'}');
    let body = if failed == 0 { body.to_vec() } else { out };
    Some(Checked { failed, body })
}

/// The members a failed item's `error` replaces.
const ERROR_CODE: &str = "error_code";
const MESSAGE_MEMBERS: [&str; 2] = ["error_message", "error_reason"];
/// The member written in their place.
const ERROR: &str = "error";

struct ItemWriter<'a> {
    request_id: &'a str,
    table: &'a ErrorTable,
}

impl ItemWriter<'_> {
    /// Write `item` with its `error` object if it has failed (its
    /// `error_code` is neither absent, `null` nor blank); `false`, writing
    /// nothing, otherwise.
    fn write_if_failed(&self, out: &mut Vec<u8>, item: &RawValue) -> bool {
        // Most items have not failed: look at their code without
        // collecting (or allocating for) their members.
        let Ok(CodeOf(Some(code))) = serde_json::from_str(item.get()) else {
            return false;
        };
        let Some(code) = serde_json::from_str(code.get()).ok().and_then(ItemCode::of) else {
            return false;
        };
        let Ok(Members(members)) = serde_json::from_str(item.get()) else {
            return false;
        };
        let error = self.error_of(code, &members);
        out.push(b'{');
        let mut first = true;
        let mut error_written = false;
        for (name, value) in &members {
            // The error members go; `error` takes the first code's place.
            let error_here = name == ERROR_CODE && !error_written;
            let dropped =
                name == ERROR_CODE || name == ERROR || MESSAGE_MEMBERS.contains(&name.as_ref());
            if dropped && !error_here {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            if error_here {
                push_json_str(out, ERROR);
                out.push(b':');
                error.write(out);
                error_written = true;
            } else {
                push_json_str(out, name);
                out.push(b':');
                out.extend_from_slice(value.get().as_bytes());
            }
        }
        out.push(b'}');
        true
    }

    /// The canonical error of a failed item, from its code and its
    /// message members.
    fn error_of(&self, code: ItemCode, members: &[(Cow<'_, str>, &RawValue)]) -> ItemError<'_> {
        let value_of = |name: &str| {
            members
                .iter()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| serde_json::from_str::<Value>(v.get()).ok())
        };
        let mut message = None;
        // Nothing is lost: a second message, a non-string one, or an
        // `error` member the item already had goes to `details`.
        let mut extras = serde_json::Map::new();
        for name in MESSAGE_MEMBERS {
            match value_of(name) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if s.trim().is_empty() => {}
                Some(Value::String(s)) if message.is_none() => message = Some(s),
                Some(other) => {
                    extras.insert(name.to_string(), other);
                }
            }
        }
        if let Some(previous) = value_of(ERROR) {
            extras.insert(ERROR.to_string(), previous);
        }
        let (class, details) = match code.status {
            Some(status) => {
                let mut details = serde_json::Map::new();
                details.insert("status".into(), status.into());
                details.extend(extras);
                (self.table.type_and_code(status), Value::Object(details))
            }
            None => {
                let class = ErrorClass {
                    kind: "item_error".into(),
                    code: code.lowercased.into(),
                };
                let details = if extras.is_empty() {
                    Value::Null
                } else {
                    Value::Object(extras)
                };
                (class, details)
            }
        };
        ItemError {
            class,
            message: message.unwrap_or(code.as_given),
            request_id: self.request_id,
            details,
        }
    }
}

/// A failed item's canonical error object.
struct ItemError<'a> {
    class: ErrorClass,
    message: String,
    request_id: &'a str,
    details: Value,
}

impl ItemError<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let ErrorClass { kind, code } = &self.class;
        write_error_object(out, [kind, code, &self.message, self.request_id], |out| {
            push_json_value(out, &self.details)
        });
    }
}

/// A failed item's `error_code`.
struct ItemCode {
    /// A status 400–599 (a number or a numeric string).
    status: Option<u16>,
    /// The code as the item gave it (the message when it has none).
    as_given: String,
    /// The code for `"item_error"`: trimmed and lower-cased.
    lowercased: String,
}

impl ItemCode {
    /// `None` when the item has not failed (`null`, `""`, blank).
    fn of(value: Value) -> Option<ItemCode> {
        let as_given = match &value {
            Value::Null => return None,
            Value::String(s) if s.trim().is_empty() => return None,
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let status = match &value {
            Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
            Value::String(s) => s.trim().parse::<u16>().ok(),
            _ => None,
        }
        .filter(|s| (400..=599).contains(s));
        let lowercased = as_given.trim().to_ascii_lowercase();
        Some(ItemCode {
            status,
            as_given,
            lowercased,
        })
    }
}

/// A JSON object's members in order, each value as its raw bytes.
/// Duplicate names are kept as they came.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Members<'de>, M::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((Key(name), value)) = map.next_entry::<Key, &'de RawValue>()? {
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(MembersVisitor)
    }
}

/// An object's first `error_code`, raw; the other members are skipped.
struct CodeOf<'a>(Option<&'a RawValue>);

impl<'de> Deserialize<'de> for CodeOf<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CodeVisitor;
        impl<'de> Visitor<'de> for CodeVisitor {
            type Value = CodeOf<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<CodeOf<'de>, M::Error> {
                let mut code = None;
                while let Some(Key(name)) = map.next_key::<Key>()? {
                    if code.is_none() && name == ERROR_CODE {
                        code = Some(map.next_value::<&'de RawValue>()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(CodeOf(code))
            }
        }
        d.deserialize_map(CodeVisitor)
    }
}

/// A member name, borrowed from the body unless it has escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests;
