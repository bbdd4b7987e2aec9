//! The rate-limit response headers (docs/headers.md): `X-RateLimit-*`, the IETF
//! draft-11 `RateLimit`/`RateLimit-Policy` pair, both, or none. 429s also
//! get `Retry-After`, whatever the style.
//!
//! They come out as ready `http` names and values, straight to the caller
//! (into the response's header map): names are parsed at compile time,
//! integers below 10,000 are slices of a static table, each rule's limit is
//! made once per config, and other values are formatted on the stack and
//! copied once. A response with `X-RateLimit-*` values below 10,000
//! allocates nothing for them.

use std::fmt::Write;

use http::header::{HeaderName, HeaderValue, RETRY_AFTER};
use serde::Deserialize;

use super::{Decision, RuleSpec};

/// Which rate-limit headers go out (`rate_limit.headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeaderStyle {
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`.
    XRatelimit,
    /// The IETF draft's `RateLimit` and `RateLimit-Policy`.
    Ietf,
    Both,
    /// None but `Retry-After` on a 429.
    None,
}

static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// The most headers one decision renders (`Retry-After` and both styles).
pub const MAX_HEADERS: usize = 6;

/// The rate-limit headers for one config: its style, and each rule's
/// `X-RateLimit-Limit` value made once (a limit of 10,000 or more would
/// otherwise be formatted and allocated on every response). Built with the
/// config's rules and always given those same rules.
#[derive(Debug, Clone)]
pub struct Renderer {
    style: HeaderStyle,
    limits: Vec<HeaderValue>,
}

impl Renderer {
    pub fn new(style: HeaderStyle, rules: &[RuleSpec]) -> Renderer {
        let limits = rules.iter().map(|r| int_value(r.limit)).collect();
        Renderer { style, limits }
    }

    /// How many headers [`Renderer::render`] gives for `decision` (to
    /// reserve room for them).
    pub fn count(&self, decision: &Decision) -> usize {
        let retry = usize::from(decision.denied.is_some());
        if decision.tightest.is_none() {
            return retry;
        }
        retry
            + match self.style {
                HeaderStyle::XRatelimit => 3,
                HeaderStyle::Ietf => 2,
                HeaderStyle::Both => 5,
                HeaderStyle::None => 0,
            }
    }

    /// Headers for a decision, handed to `out` in the order they should be
    /// sent.
    pub fn render(
        &self,
        decision: &Decision,
        rules: &[RuleSpec],
        mut out: impl FnMut(HeaderName, HeaderValue),
    ) {
        if let Some(denial) = decision.denied {
            out(RETRY_AFTER, int_value(denial.retry_after_secs));
        }
        let Some(t) = decision.tightest else {
            return;
        };
        if matches!(self.style, HeaderStyle::XRatelimit | HeaderStyle::Both) {
            let limit = self.limits.get(t.rule).cloned();
            out(
                X_RATELIMIT_LIMIT.clone(),
                limit.unwrap_or_else(|| int_value(t.limit)),
            );
            out(X_RATELIMIT_REMAINING.clone(), int_value(t.remaining));
            out(X_RATELIMIT_RESET.clone(), int_value(t.reset_secs));
        }
        if matches!(self.style, HeaderStyle::Ietf | HeaderStyle::Both) {
            // One scratch string for both values; each is copied out at its size.
            let mut text = String::with_capacity(128);
            for i in decision.matched.iter() {
                let Some(rule) = rules.get(i) else { continue };
                if !text.is_empty() {
                    text.push_str(", ");
                }
                let _ = write!(
                    text,
                    "\"{}\";q={};w={}",
                    rule.name,
                    rule.limit,
                    rule.window_secs()
                );
            }
            push_text(&mut out, &RATELIMIT_POLICY, &text);
            if let Some(rule) = rules.get(t.rule) {
                text.clear();
                let _ = write!(
                    text,
                    "\"{}\";r={};t={}",
                    rule.name, t.remaining, t.reset_secs
                );
                push_text(&mut out, &RATELIMIT, &text);
            }
        }
    }
}

/// An integer as a header value. Below [`STATIC_INTS`] (remaining tokens,
/// seconds to reset, most limits) it points into static memory: no
/// allocation, nothing to free. Larger ones take one exact-size allocation
/// (`HeaderValue::from` an integer takes two: a growable buffer, then a
/// shared handle to it).
pub fn int_value(n: impl itoa::Integer + TryInto<usize> + Copy) -> HeaderValue {
    if let Some(digits) = n.try_into().ok().and_then(static_digits) {
        return HeaderValue::from_static(digits);
    }
    let mut buf = itoa::Buffer::new();
    // Digits are always a valid header value.
    HeaderValue::from_str(buf.format(n)).unwrap_or(HeaderValue::from_static("0"))
}

/// Integers below this have a static header value.
pub const STATIC_INTS: usize = 10_000;
const STATIC_DIGITS_LEN: usize = 10 + 90 * 2 + 900 * 3 + 9000 * 4;

/// "0", "1", ... "9999", back to back (38,890 bytes of read-only data, of
/// which a process touches the pages it uses).
static STATIC_DIGITS: [u8; STATIC_DIGITS_LEN] = {
    let mut out = [0u8; STATIC_DIGITS_LEN];
    let (mut n, mut at) = (0, 0);
    while n < STATIC_INTS {
        let width = digit_count(n);
        let (mut m, mut k) = (n, width);
        while k > 0 {
            out[at + k - 1] = b'0' + (m % 10) as u8;
            m /= 10;
            k -= 1;
        }
        at += width;
        n += 1;
    }
    out
};

const fn digit_count(n: usize) -> usize {
    match n {
        0..10 => 1,
        10..100 => 2,
        100..1000 => 3,
        _ => 4,
    }
}

/// Where the first number with `width` digits starts in [`STATIC_DIGITS`],
/// and that number.
const fn width_start(width: usize) -> (usize, usize) {
    match width {
        1 => (0, 0),
        2 => (10, 10),
        3 => (190, 100),
        _ => (2890, 1000),
    }
}

/// `n`'s digits in [`STATIC_DIGITS`], when it is small enough.
fn static_digits(n: usize) -> Option<&'static str> {
    if n >= STATIC_INTS {
        return None;
    }
    let width = digit_count(n);
    let (start, first) = width_start(width);
    let at = start + (n - first) * width;
    std::str::from_utf8(STATIC_DIGITS.get(at..at + width)?).ok()
}

/// Rule names are limited to `A-Z a-z 0-9 _ -` at config load, so the
/// value is always valid; were it not, the header is left out rather than
/// failing the response.
fn push_text(out: &mut impl FnMut(HeaderName, HeaderValue), name: &HeaderName, text: &str) {
    if let Ok(value) = HeaderValue::from_str(text) {
        out(name.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::{Denial, RuleMode, RuleSet, RuleState};
    use crate::routes::RequestMatcher;
    use std::time::Duration;

    #[test]
    fn integers_render_exactly_static_or_not() {
        for n in (0..20_000u64).chain([u64::from(u32::MAX), u64::MAX]) {
            let value = int_value(n);
            assert_eq!(value.to_str().unwrap(), n.to_string());
        }
        assert_eq!(int_value(9_999u32), "9999");
        assert_eq!(int_value(usize::MAX), usize::MAX.to_string().as_str());
    }

    fn rules() -> Vec<RuleSpec> {
        let r = |name: &str, limit, secs| RuleSpec {
            name: name.into(),
            applies_to: RequestMatcher::any(),
            limit,
            period: Duration::from_secs(secs),
            burst: limit,
            mode: RuleMode::Enforce,
            key: Default::default(),
        };
        vec![r("default", 100, 1), r("auth", 20, 60)]
    }

    fn denied() -> Decision {
        let state = RuleState {
            rule: 1,
            limit: 20,
            remaining: 0,
            reset_secs: 42,
        };
        Decision {
            denied: Some(Denial {
                state,
                retry_after_secs: 3,
            }),
            tightest: Some(state),
            matched: [0, 1].into_iter().collect(),
            shadowed: RuleSet::default(),
        }
    }

    /// The rendered headers as text, for comparing; checks `count` too.
    fn text_with(
        style: HeaderStyle,
        decision: &Decision,
        rules: &[RuleSpec],
    ) -> Vec<(String, String)> {
        let renderer = Renderer::new(style, rules);
        let mut h = Vec::new();
        renderer.render(decision, rules, |n, v| {
            h.push((n.to_string(), v.to_str().unwrap().to_string()))
        });
        assert_eq!(h.len(), renderer.count(decision), "{style:?}");
        h
    }

    fn text(style: HeaderStyle, decision: &Decision) -> Vec<(String, String)> {
        text_with(style, decision, &rules())
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn x_ratelimit_style() {
        let h = text(HeaderStyle::XRatelimit, &denied());
        assert_eq!(
            h,
            owned(&[
                ("retry-after", "3"),
                ("x-ratelimit-limit", "20"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "42"),
            ])
        );
    }

    #[test]
    fn ietf_style() {
        let h = text(HeaderStyle::Ietf, &denied());
        let policy = "\"default\";q=100;w=1, \"auth\";q=20;w=60";
        assert!(h.contains(&owned(&[("ratelimit-policy", policy)])[0]));
        assert!(h.contains(&owned(&[("ratelimit", "\"auth\";r=0;t=42")])[0]));
        assert!(!h.iter().any(|(n, _)| n.starts_with("x-")));
    }

    /// Rule names are limited to `A-Z a-z 0-9 _ -` at load, so no header is
    /// ever left out, and `MAX_HEADERS` is enough for the most there are.
    #[test]
    fn both_styles_render_every_header() {
        let h = text(HeaderStyle::Both, &denied());
        assert_eq!(h.len(), MAX_HEADERS);
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "retry-after",
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
                "ratelimit-policy",
                "ratelimit"
            ]
        );
    }

    /// A limit past the static table, made once at load, reads the same
    /// as the decision's own limit formatted per response would.
    #[test]
    fn limits_made_at_load_match_the_decision() {
        let mut big = rules();
        big[1].limit = 1_000_000;
        let mut d = denied();
        d.tightest.as_mut().unwrap().limit = 1_000_000;
        for style in [HeaderStyle::XRatelimit, HeaderStyle::Both] {
            let h = text_with(style, &d, &big);
            let limit = owned(&[("x-ratelimit-limit", "1000000")]);
            assert!(h.contains(&limit[0]), "{style:?}: {h:?}");
        }
        assert_eq!(
            text_with(HeaderStyle::None, &d, &big),
            owned(&[("retry-after", "3")])
        );
    }

    #[test]
    fn none_style_keeps_retry_after_only() {
        let h = text(HeaderStyle::None, &denied());
        assert_eq!(h, owned(&[("retry-after", "3")]));
        assert!(text(HeaderStyle::Both, &Decision::default()).is_empty());
        let allowed = Decision {
            denied: None,
            ..denied()
        };
        assert_eq!(text(HeaderStyle::Both, &allowed).len(), MAX_HEADERS - 1);
    }
}
