//! Which requests a rule or a route applies to ([`RequestMatcher`]), and
//! route names for metrics and logs (`[[routes]]`): the longest matching
//! prefix wins; a request that matches none is `default`. Routes never
//! block traffic.

/// A path prefix and, optionally, methods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestMatcher {
    /// Starts with `/` (checked at load); `/` matches every path.
    pub path_prefix: String,
    /// Upper-case method names; empty matches every method.
    pub methods: Vec<String>,
}

impl RequestMatcher {
    pub fn new(path_prefix: &str, methods: &[&str]) -> RequestMatcher {
        RequestMatcher {
            path_prefix: path_prefix.to_string(),
            methods: methods.iter().map(|m| m.to_string()).collect(),
        }
    }

    /// Every request.
    pub fn any() -> RequestMatcher {
        RequestMatcher::new("/", &[])
    }

    pub fn matches(&self, method: &str, path: &str) -> bool {
        path.starts_with(&self.path_prefix)
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == method))
    }
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The `route` label; never `default`, which is the unmatched route.
    pub name: String,
    pub applies_to: RequestMatcher,
    /// Top-level members of a 2xx JSON body whose items' errors are
    /// rewritten (`item_errors`); empty: the body streams untouched.
    pub item_errors: Vec<String>,
}

/// A route's index in [`RouteTable::names`].
pub type RouteId = usize;

/// The route of a request no `[[routes]]` entry matches.
pub const DEFAULT_ROUTE: RouteId = 0;

#[derive(Debug, Clone)]
pub struct RouteTable {
    names: Vec<String>,
    matchers: Vec<RequestMatcher>,
    /// Per route, as `names`.
    item_errors: Vec<Vec<String>>,
}

impl RouteTable {
    /// The routes in file order.
    pub fn new(routes: &[RouteSpec]) -> Self {
        let names = std::iter::once("default".to_string())
            .chain(routes.iter().map(|r| r.name.clone()))
            .collect();
        let matchers = routes.iter().map(|r| r.applies_to.clone()).collect();
        let item_errors = std::iter::once(Vec::new())
            .chain(routes.iter().map(|r| r.item_errors.clone()))
            .collect();
        RouteTable {
            names,
            matchers,
            item_errors,
        }
    }

    /// The arrays whose items' errors a route rewrites (none for most).
    pub fn item_errors(&self, route: RouteId) -> &[String] {
        self.item_errors.get(route).map_or(&[], Vec::as_slice)
    }

    /// Route names; index 0 is `default`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The route of a request: the matching one with the longest prefix
    /// (the first of equals), else `default`.
    pub fn find(&self, method: &str, path: &str) -> RouteId {
        let mut best: Option<(usize, RouteId)> = None;
        for (i, m) in self.matchers.iter().enumerate() {
            let longer = best.is_none_or(|(len, _)| m.path_prefix.len() > len);
            if longer && m.matches(method, path) {
                best = Some((m.path_prefix.len(), i + 1));
            }
        }
        best.map_or(DEFAULT_ROUTE, |(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matchers_take_a_prefix_and_methods() {
        let post = RequestMatcher::new("/v1/auth", &["POST"]);
        assert!(post.matches("POST", "/v1/auth/login"));
        assert!(!post.matches("GET", "/v1/auth/login"));
        assert!(!post.matches("POST", "/v1/docs"));
        assert!(RequestMatcher::any().matches("DELETE", "/anything"));
    }

    #[test]
    fn longest_prefix_and_methods() {
        let route = |name: &str, prefix, methods| RouteSpec {
            name: name.into(),
            applies_to: RequestMatcher::new(prefix, methods),
            item_errors: vec![name.to_string()],
        };
        let t = RouteTable::new(&[route("api", "/v1", &[]), route("ocr", "/v1/ocr", &["POST"])]);
        assert_eq!(t.names()[t.find("POST", "/v1/ocr/scan")], "ocr");
        assert_eq!(t.names()[t.find("GET", "/v1/ocr/scan")], "api");
        assert_eq!(t.names()[t.find("GET", "/health")], "default");
        assert_eq!(t.item_errors(t.find("POST", "/v1/ocr/x")), ["ocr"]);
        assert!(t.item_errors(DEFAULT_ROUTE).is_empty());
    }
}
