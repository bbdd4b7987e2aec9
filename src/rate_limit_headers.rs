//! The rate-limit response headers (SPEC §2): `X-RateLimit-*`, the IETF
//! draft-11 `RateLimit`/`RateLimit-Policy` pair, both, or none. 429s also
//! get `Retry-After`, whatever the style.

use std::fmt::Write;

use crate::config::HeaderStyle;
use crate::rate_limit::{Decision, RuleSpec};

/// Headers for a decision, in the order they should be sent.
pub fn render(
    style: HeaderStyle,
    decision: &Decision,
    rules: &[RuleSpec],
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some((_, retry_after)) = decision.denied {
        out.push(("retry-after", retry_after.to_string()));
    }
    let Some(t) = decision.tightest else {
        return out;
    };
    if matches!(style, HeaderStyle::XRatelimit | HeaderStyle::Both) {
        out.push(("x-ratelimit-limit", t.limit.to_string()));
        out.push(("x-ratelimit-remaining", t.remaining.to_string()));
        out.push(("x-ratelimit-reset", t.reset_secs.to_string()));
    }
    if matches!(style, HeaderStyle::Ietf | HeaderStyle::Both) {
        let mut policy = String::new();
        for i in decision.matched.iter() {
            let Some(rule) = rules.get(i) else { continue };
            if !policy.is_empty() {
                policy.push_str(", ");
            }
            let _ = write!(
                policy,
                "\"{}\";q={};w={}",
                rule.name,
                rule.limit,
                rule.window_secs()
            );
        }
        out.push(("ratelimit-policy", policy));
        if let Some(rule) = rules.get(t.rule) {
            out.push((
                "ratelimit",
                format!("\"{}\";r={};t={}", rule.name, t.remaining, t.reset_secs),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate_limit::RuleState;
    use std::time::Duration;

    fn rules() -> Vec<RuleSpec> {
        let r = |name: &str, limit, secs| RuleSpec {
            name: name.into(),
            path_prefix: "/".into(),
            methods: vec![],
            limit,
            period: Duration::from_secs(secs),
            burst: limit,
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
            denied: Some((state, 3)),
            tightest: Some(state),
            matched: [0, 1].into_iter().collect(),
        }
    }

    #[test]
    fn x_ratelimit_style() {
        let h = render(HeaderStyle::XRatelimit, &denied(), &rules());
        assert_eq!(
            h,
            vec![
                ("retry-after", "3".to_string()),
                ("x-ratelimit-limit", "20".into()),
                ("x-ratelimit-remaining", "0".into()),
                ("x-ratelimit-reset", "42".into()),
            ]
        );
    }

    #[test]
    fn ietf_style() {
        let h = render(HeaderStyle::Ietf, &denied(), &rules());
        assert!(h.contains(&(
            "ratelimit-policy",
            "\"default\";q=100;w=1, \"auth\";q=20;w=60".into()
        )));
        assert!(h.contains(&("ratelimit", "\"auth\";r=0;t=42".into())));
        assert!(!h.iter().any(|(n, _)| n.starts_with("x-")));
    }

    /// The gateway inserts these with `HeaderName::from_static`, which
    /// panics on a name that is not lower-case and valid.
    #[test]
    fn every_name_and_value_is_a_valid_header() {
        for style in [
            HeaderStyle::XRatelimit,
            HeaderStyle::Ietf,
            HeaderStyle::Both,
        ] {
            for (name, value) in render(style, &denied(), &rules()) {
                assert_eq!(http::HeaderName::from_static(name).as_str(), name);
                assert!(http::HeaderValue::try_from(value).is_ok(), "{name}");
            }
        }
    }

    #[test]
    fn none_style_keeps_retry_after_only() {
        let h = render(HeaderStyle::None, &denied(), &rules());
        assert_eq!(h, vec![("retry-after", "3".to_string())]);
        assert!(render(HeaderStyle::Both, &Decision::default(), &rules()).is_empty());
    }
}
