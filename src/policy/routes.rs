//! The route table: `(method, path template)` → Cedar action and resource, and
//! who answers (the upstream or one of rolegate's own handlers).
//!
//! Matching walks the normalised path's segments against each template of the
//! request's method; literal segments beat `{param}` segments, so
//! `POST /stream/validate` is never read as `POST /stream/{id}`.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// Where a route's resource id comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceId {
    /// A fixed id (`OrgResource::streams`).
    Fixed(String),
    /// A path parameter (`Stream::{id}`).
    Param(String),
    /// The user named in the request body; resolved by the handler.
    Target,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    pub template: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: ResourceId,
    pub handler: String,
    /// Position in routes.toml, for messages.
    pub index: usize,
    segments: Vec<Segment>,
}

impl Route {
    pub fn is_upstream(&self) -> bool {
        self.handler == "upstream"
    }
}

/// A match: the route and the values of its path parameters.
#[derive(Debug)]
pub struct RouteMatch<'r, 'p> {
    pub route: &'r Arc<Route>,
    pub params: Vec<(&'r str, &'p str)>,
}

impl<'r, 'p> RouteMatch<'r, 'p> {
    pub fn param(&self, name: &str) -> Option<&'p str> {
        self.params
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// The resource id for this request, when the route alone determines it.
    pub fn resource_id(&self) -> Option<&'p str>
    where
        'r: 'p,
    {
        match &self.route.resource_id {
            ResourceId::Fixed(id) => Some(id.as_str()),
            ResourceId::Param(p) => self.param(p),
            ResourceId::Target => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// Shared, so a request keeps its matched route by reference count, not by copy.
    routes: Vec<Arc<Route>>,
    by_method: HashMap<String, Vec<usize>>,
    /// Actions no route names, with the reason (`[unrouted]`).
    pub unrouted: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct RouteError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    unrouted: HashMap<String, String>,
    #[serde(default)]
    route: Vec<RawRoute>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    method: String,
    path: String,
    action: String,
    resource: String,
    #[serde(default = "upstream")]
    handler: String,
}

fn upstream() -> String {
    "upstream".to_owned()
}

/// The 1-based line of the `n`-th `[[route]]` header in `src`.
fn route_line(src: &str, n: usize) -> usize {
    src.lines()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[route]]"))
        .nth(n)
        .map(|(i, _)| i + 1)
        .unwrap_or(1)
}

fn line_of_offset(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())].matches('\n').count() + 1
}

impl RouteTable {
    /// Parse a routes file. `file` is used in messages only.
    pub fn parse(file: &str, src: &str) -> Result<Self, RouteError> {
        let raw: RawTable = toml::from_str(src).map_err(|e| RouteError {
            file: file.to_owned(),
            line: e.span().map(|s| line_of_offset(src, s.start)).unwrap_or(1),
            message: e.message().to_owned(),
        })?;
        let mut table = RouteTable {
            unrouted: raw.unrouted,
            ..Default::default()
        };
        for (index, r) in raw.route.into_iter().enumerate() {
            let err = |message: String| RouteError {
                file: file.to_owned(),
                line: route_line(src, index),
                message,
            };
            let method = r.method.to_ascii_uppercase();
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(err(format!("method `{}` is not an HTTP method", r.method)));
            }
            if !r.path.starts_with('/') {
                return Err(err(format!("path `{}` does not start with `/`", r.path)));
            }
            let segments: Vec<Segment> = r
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(
                    |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                        Some(p) => Segment::Param(p.to_owned()),
                        None => Segment::Literal(s.to_owned()),
                    },
                )
                .collect();
            let (rtype, rid) = r.resource.split_once("::").ok_or_else(|| {
                err(format!(
                    "resource `{}` is not of the form `Type::id`",
                    r.resource
                ))
            })?;
            let resource_id = match rid.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some("target") => ResourceId::Target,
                Some(p) => {
                    if !segments.contains(&Segment::Param(p.to_owned())) {
                        return Err(err(format!(
                            "resource `{}` names `{{{p}}}`, which path `{}` does not have",
                            r.resource, r.path
                        )));
                    }
                    ResourceId::Param(p.to_owned())
                }
                None => ResourceId::Fixed(rid.to_owned()),
            };
            let duplicate = table
                .routes
                .iter()
                .any(|o| o.method == method && o.segments == segments);
            if duplicate {
                return Err(err(format!("route `{method} {}` is listed twice", r.path)));
            }
            table
                .by_method
                .entry(method.clone())
                .or_default()
                .push(index);
            table.routes.push(Arc::new(Route {
                method,
                template: r.path,
                action: r.action,
                resource_type: rtype.to_owned(),
                resource_id,
                handler: r.handler,
                index,
                segments,
            }));
        }
        // Most specific first: compare segment by segment, literal before param.
        let routes = &table.routes;
        for list in table.by_method.values_mut() {
            list.sort_by(|&a, &b| {
                let (sa, sb) = (&routes[a].segments, &routes[b].segments);
                let ka: Vec<u8> = sa
                    .iter()
                    .map(|s| matches!(s, Segment::Param(_)) as u8)
                    .collect();
                let kb: Vec<u8> = sb
                    .iter()
                    .map(|s| matches!(s, Segment::Param(_)) as u8)
                    .collect();
                ka.cmp(&kb)
            });
        }
        Ok(table)
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Find the route for a method and a normalised path.
    pub fn find<'r, 'p>(&'r self, method: &str, path: &'p str) -> Option<RouteMatch<'r, 'p>> {
        let candidates = self.by_method.get(method)?;
        let mut params = Vec::new();
        'route: for &i in candidates {
            let route = &self.routes[i];
            params.clear();
            let mut parts = path.split('/').filter(|s| !s.is_empty());
            for seg in &route.segments {
                let Some(part) = parts.next() else {
                    continue 'route;
                };
                match seg {
                    Segment::Literal(l) if l == part => {}
                    Segment::Literal(_) => continue 'route,
                    Segment::Param(name) => params.push((name.as_str(), part)),
                }
            }
            if parts.next().is_some() {
                continue;
            }
            return Some(RouteMatch {
                route,
                params: std::mem::take(&mut params),
            });
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
[[route]]
method = "GET"
path = "/stream/{id}"
action = "getStream"
resource = "Stream::{id}"

[[route]]
method = "POST"
path = "/stream/{id}"
action = "x"
resource = "Stream::{id}"

[[route]]
method = "POST"
path = "/stream/validate"
action = "validateStream"
resource = "OrgResource::streams"
"#;

    #[test]
    fn literal_beats_param() {
        let t = RouteTable::parse("routes.toml", SRC).unwrap();
        let m = t.find("POST", "/stream/validate").unwrap();
        assert_eq!(m.route.action, "validateStream");
        let m = t.find("POST", "/stream/abc").unwrap();
        assert_eq!(m.route.action, "x");
        let m = t.find("GET", "/stream/abc").unwrap();
        assert_eq!(m.resource_id(), Some("abc"));
        assert!(t.find("GET", "/stream").is_none());
        assert!(t.find("GET", "/stream/a/b").is_none());
        assert!(t.find("PATCH", "/stream/a").is_none());
    }

    #[test]
    fn errors_name_the_line() {
        let bad = "[[route]]\nmethod = \"GET\"\npath = \"/a/{id}\"\naction = \"x\"\nresource = \"Stream::{sid}\"\n";
        let e = RouteTable::parse("routes.toml", bad).unwrap_err();
        assert_eq!(e.line, 1);
        assert!(e.message.contains("{sid}"));
        let e = RouteTable::parse("routes.toml", "[[route]]\nmethod = 3\n").unwrap_err();
        assert_eq!(e.line, 2);
    }
}
