//! The two forms an error body can take, the envelope and RFC 9457
//! problem details, written from one view of the error so they can never
//! disagree; and the choice between them from the client's `Accept`.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::json::{push_json_object, push_json_str, push_json_value, write_envelope};
use super::reason_phrase;

/// Which form an error body takes (`errors.format` is the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorFormat {
    /// `{"error":{type,code,message,request_id,details}}`.
    #[default]
    Envelope,
    /// RFC 9457 `application/problem+json`.
    Problem,
}

pub const PROBLEM_JSON: &str = "application/problem+json";
const APPLICATION_JSON: &str = "application/json";

impl ErrorFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ErrorFormat::Envelope => APPLICATION_JSON,
            ErrorFormat::Problem => PROBLEM_JSON,
        }
    }
}

/// The form a client with these `Accept` lines gets: each of
/// `application/problem+json` and `application/json` takes the q-value of
/// the most specific range that matches it (`type/subtype` over `type/*`
/// over `*/*`; none matching is 0), the higher wins, and a tie (no
/// `Accept` included) goes to `default`.
///
/// Media-type parameters other than `q` do not narrow a match, and an
/// element whose `q` cannot be read is skipped (docs/errors.md).
pub fn negotiate<'a>(
    accept: impl IntoIterator<Item = &'a [u8]>,
    default: ErrorFormat,
) -> ErrorFormat {
    let mut problem = Preference::NONE;
    let mut json = Preference::NONE;
    let elements = accept
        .into_iter()
        .flat_map(|line| line.split(|&b| b == b','));
    for element in elements {
        let Some(range) = MediaRange::parse(element) else {
            continue;
        };
        problem.consider(range.specificity("application", "problem+json"), range.q);
        json.consider(range.specificity("application", "json"), range.q);
    }
    match problem.q.cmp(&json.q) {
        std::cmp::Ordering::Greater => ErrorFormat::Problem,
        std::cmp::Ordering::Less => ErrorFormat::Envelope,
        std::cmp::Ordering::Equal => default,
    }
}

/// How specifically a media range names a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    Any,
    Type,
    Exact,
}

/// q-values in thousandths (RFC 9110 allows three decimals).
type Qvalue = u16;

/// The best match so far for one media type.
struct Preference {
    specificity: Option<Specificity>,
    q: Qvalue,
}

impl Preference {
    const NONE: Preference = Preference {
        specificity: None,
        q: 0,
    };

    /// A more specific match replaces the q-value; an equally specific
    /// one (a repeated range) keeps the higher.
    fn consider(&mut self, specificity: Option<Specificity>, q: Qvalue) {
        let Some(s) = specificity else {
            return;
        };
        match self.specificity.cmp(&Some(s)) {
            std::cmp::Ordering::Less => {
                self.specificity = Some(s);
                self.q = q;
            }
            std::cmp::Ordering::Equal => self.q = self.q.max(q),
            std::cmp::Ordering::Greater => {}
        }
    }
}

/// One element of `Accept`: `type/subtype;param=…;q=…`.
struct MediaRange<'a> {
    kind: &'a [u8],
    subtype: &'a [u8],
    q: Qvalue,
}

impl<'a> MediaRange<'a> {
    fn parse(element: &'a [u8]) -> Option<MediaRange<'a>> {
        let mut parts = element.split(|&b| b == b';');
        let range = parts.next()?.trim_ascii();
        let slash = range.iter().position(|&b| b == b'/')?;
        let (kind, subtype) = (range[..slash].trim_ascii(), range[slash + 1..].trim_ascii());
        if kind.is_empty() || subtype.is_empty() {
            return None;
        }
        let mut q = 1000;
        for param in parts {
            let param = param.trim_ascii();
            let Some(value) = param
                .strip_prefix(b"q=")
                .or_else(|| param.strip_prefix(b"Q="))
            else {
                continue;
            };
            q = parse_qvalue(value.trim_ascii())?;
        }
        Some(MediaRange { kind, subtype, q })
    }

    fn specificity(&self, kind: &str, subtype: &str) -> Option<Specificity> {
        let star = |s: &[u8]| s == b"*";
        if star(self.kind) && star(self.subtype) {
            return Some(Specificity::Any);
        }
        if !self.kind.eq_ignore_ascii_case(kind.as_bytes()) {
            return None;
        }
        if star(self.subtype) {
            Some(Specificity::Type)
        } else if self.subtype.eq_ignore_ascii_case(subtype.as_bytes()) {
            Some(Specificity::Exact)
        } else {
            None
        }
    }
}

/// `0`, `0.5`, `1`, `1.000` (RFC 9110 §12.4.2) in thousandths.
fn parse_qvalue(s: &[u8]) -> Option<Qvalue> {
    let (whole, fraction) = match s.iter().position(|&b| b == b'.') {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &b""[..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: Qvalue = 0;
    for i in 0..3 {
        thousandths = thousandths * 10 + fraction.get(i).map_or(0, |d| Qvalue::from(d - b'0'));
    }
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// An error's `details`, as the writer gets it.
#[derive(Debug, Clone, Copy)]
pub enum Details<'a> {
    Null,
    /// A 429's `{"retry_after": N}`, written without building a `Value`.
    RetryAfter(u64),
    Value(&'a Value),
}

/// One error, whichever form it leaves in: the envelope's members, and
/// whether its details hold an upstream problem's own members (`type`,
/// `title`, `instance`), which the problem form lifts back to the top.
#[derive(Debug, Clone, Copy)]
pub struct ErrorView<'a> {
    pub status: u16,
    pub kind: &'a str,
    pub code: &'a str,
    pub message: &'a str,
    pub request_id: &'a str,
    pub details: Details<'a>,
    pub from_upstream_problem: bool,
}

/// The problem members taken from an upstream problem's details.
const LIFTED: [&str; 3] = ["type", "title", "instance"];

impl ErrorView<'_> {
    /// The body in `format`, appended to `out`.
    pub fn write(&self, format: ErrorFormat, out: &mut Vec<u8>) {
        match format {
            ErrorFormat::Envelope => write_envelope(
                out,
                [self.kind, self.code, self.message, self.request_id],
                |out| write_details(out, self.details),
            ),
            ErrorFormat::Problem => self.write_problem(out),
        }
    }

    /// `{"type","title","status","detail","instance"?,"error_type","code",
    /// "request_id","details"}`: the envelope's members under the names
    /// RFC 9457 gives them, its own extensions for the rest.
    fn write_problem(&self, out: &mut Vec<u8>) {
        let (lifted, rest) = self.lift();
        let member = |out: &mut Vec<u8>, name: &str, first: bool| {
            if !first {
                out.push(b',');
            }
            push_json_str(out, name);
            out.push(b':');
        };
        out.push(b'{');
        member(out, "type", true);
        push_json_str(out, lifted.kind.unwrap_or("about:blank"));
        member(out, "title", false);
        push_json_str(out, lifted.title.unwrap_or(reason_phrase(self.status)));
        member(out, "status", false);
        out.extend_from_slice(itoa::Buffer::new().format(self.status).as_bytes());
        member(out, "detail", false);
        push_json_str(out, self.message);
        if let Some(instance) = lifted.instance {
            member(out, "instance", false);
            push_json_str(out, instance);
        }
        member(out, "error_type", false);
        push_json_str(out, self.kind);
        member(out, "code", false);
        push_json_str(out, self.code);
        member(out, "request_id", false);
        push_json_str(out, self.request_id);
        member(out, "details", false);
        match &rest {
            Some(rest) if rest.is_empty() => out.extend_from_slice(b"null"),
            Some(rest) => push_json_object(out, rest),
            None => write_details(out, self.details),
        }
        out.push(b'}');
    }

    /// An upstream problem's string `type`, `title` and `instance`, and its
    /// details without them (`None`: nothing was lifted, the details go
    /// out as they are).
    fn lift(&self) -> (Lifted<'_>, Option<Map<String, Value>>) {
        let none = Lifted::default();
        let (true, Details::Value(Value::Object(details))) =
            (self.from_upstream_problem, self.details)
        else {
            return (none, None);
        };
        let string = |k| details.get(k).and_then(Value::as_str);
        let lifted = Lifted {
            kind: string("type"),
            title: string("title"),
            instance: string("instance"),
        };
        if lifted.kind.is_none() && lifted.title.is_none() && lifted.instance.is_none() {
            return (none, None);
        }
        let rest = details
            .iter()
            .filter(|(k, v)| !(LIFTED.contains(&k.as_str()) && v.is_string()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (lifted, Some(rest))
    }
}

#[derive(Default)]
struct Lifted<'a> {
    kind: Option<&'a str>,
    title: Option<&'a str>,
    instance: Option<&'a str>,
}

fn write_details(out: &mut Vec<u8>, details: Details<'_>) {
    match details {
        Details::Null => out.extend_from_slice(b"null"),
        Details::RetryAfter(n) => {
            out.extend_from_slice(br#"{"retry_after":"#);
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.push(b'}');
        }
        Details::Value(v) => push_json_value(out, v),
    }
}

#[cfg(test)]
mod tests;
