//! Route names for metrics and logs (`[[routes]]`): the longest matching
//! prefix wins; a request that matches none is `default`. Routes never
//! block traffic.

/// A route's index in [`RouteTable::names`]; 0 is `default`.
pub type RouteId = usize;

#[derive(Debug, Clone)]
struct Route {
    prefix: String,
    methods: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct RouteTable {
    names: Vec<String>,
    routes: Vec<Route>,
}

impl RouteTable {
    /// `routes` as (name, path_prefix, methods), in file order.
    pub fn new(routes: impl IntoIterator<Item = (String, String, Vec<String>)>) -> Self {
        let mut names = vec!["default".to_string()];
        let mut table = Vec::new();
        for (name, prefix, methods) in routes {
            names.push(name);
            table.push(Route { prefix, methods });
        }
        RouteTable {
            names,
            routes: table,
        }
    }

    /// Route names; index 0 is `default`.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn find(&self, method: &str, path: &str) -> RouteId {
        let mut best: Option<(usize, RouteId)> = None;
        for (i, r) in self.routes.iter().enumerate() {
            let method_ok = r.methods.is_empty() || r.methods.iter().any(|m| m == method);
            if method_ok
                && path.starts_with(&r.prefix)
                && best.is_none_or(|(len, _)| r.prefix.len() > len)
            {
                best = Some((r.prefix.len(), i + 1));
            }
        }
        best.map_or(0, |(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_and_methods() {
        let t = RouteTable::new([
            ("api".to_string(), "/v1".to_string(), vec![]),
            (
                "ocr".to_string(),
                "/v1/ocr".to_string(),
                vec!["POST".to_string()],
            ),
        ]);
        assert_eq!(t.names()[t.find("POST", "/v1/ocr/scan")], "ocr");
        assert_eq!(t.names()[t.find("GET", "/v1/ocr/scan")], "api");
        assert_eq!(t.names()[t.find("GET", "/health")], "default");
    }
}
