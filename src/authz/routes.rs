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

/// rolegate's own endpoints: the closed set of local handlers a route may
/// name. A name in routes.toml outside this set is a load error, so a typo can
/// never leave a route without its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    OrganisationGet,
    OrganisationWebhook,
    ApiKeyGet,
    ApiKeyRotate,
    PlayerKeyGet,
    PlayerKeyRotate,
    PlaybackKeyRotate,
    Login,
    Password,
    UsersList,
    UsersGet,
    UsersDelete,
    UsersRole,
    UsersTokenKey,
    UsersInvite,
    UsersInviteAccept,
    PermissionsGet,
    PermissionsList,
    TokensIssue,
    AuditList,
    PlaybackIssue,
    PlaybackVerify,
    PlaybackRevoke,
    PlaybackJwks,
    PasswordResetCreate,
    PolicyExplain,
}

impl Endpoint {
    /// Every endpoint with its name in routes.toml.
    pub const ALL: [(Endpoint, &'static str); 26] = [
        (Endpoint::OrganisationGet, "organisation.get"),
        (Endpoint::OrganisationWebhook, "organisation.webhook"),
        (Endpoint::ApiKeyGet, "organisation.apikey.get"),
        (Endpoint::ApiKeyRotate, "organisation.apikey.rotate"),
        (Endpoint::PlayerKeyGet, "organisation.playerkey.get"),
        (Endpoint::PlayerKeyRotate, "organisation.playerkey.rotate"),
        (Endpoint::PlaybackKeyRotate, "playback.key.rotate"),
        (Endpoint::Login, "users.login"),
        (Endpoint::Password, "users.password"),
        (Endpoint::UsersList, "users.list"),
        (Endpoint::UsersGet, "users.get"),
        (Endpoint::UsersDelete, "users.delete"),
        (Endpoint::UsersRole, "users.role"),
        (Endpoint::UsersTokenKey, "users.tokenkey"),
        (Endpoint::UsersInvite, "users.invite"),
        (Endpoint::UsersInviteAccept, "users.invite.accept"),
        (Endpoint::PermissionsGet, "permissions.get"),
        (Endpoint::PermissionsList, "permissions.list"),
        (Endpoint::TokensIssue, "tokens.issue"),
        (Endpoint::AuditList, "audit.list"),
        (Endpoint::PlaybackIssue, "playback.issue"),
        (Endpoint::PlaybackVerify, "playback.verify"),
        (Endpoint::PlaybackRevoke, "playback.revoke"),
        (Endpoint::PlaybackJwks, "playback.jwks"),
        (Endpoint::PasswordResetCreate, "users.password.reset"),
        (Endpoint::PolicyExplain, "policy.explain"),
    ];

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(_, n)| *n == name).map(|(e, _)| *e)
    }

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(e, _)| *e == self)
            .map_or("", |(_, n)| n)
    }

    /// Endpoints that resolve the `{target}` user from the request body and
    /// decide the route's action on that user themselves. Only these may have
    /// a `{target}` resource: on any other route nothing would decide.
    pub fn decides_target(self) -> bool {
        matches!(
            self,
            Endpoint::UsersRole
                | Endpoint::UsersTokenKey
                | Endpoint::TokensIssue
                | Endpoint::PasswordResetCreate
        )
    }
}

/// Who answers a route once it is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// Forwarded to the stream API.
    Upstream,
    /// One of rolegate's own endpoints.
    Local(Endpoint),
}

impl Handler {
    pub fn name(self) -> &'static str {
        match self {
            Handler::Upstream => "upstream",
            Handler::Local(e) => e.name(),
        }
    }
}

impl std::fmt::Display for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    pub template: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: ResourceId,
    pub handler: Handler,
    /// Position in routes.toml, for messages.
    pub index: usize,
    segments: Vec<Segment>,
}

impl Route {
    pub fn is_upstream(&self) -> bool {
        self.handler == Handler::Upstream
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
    /// foldhash: looked up on every request, filled only from the routes file.
    by_method: foldhash::HashMap<String, Vec<usize>>,
    /// Actions no route names, with the reason (`[unrouted]`).
    pub unrouted: HashMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct RouteError {
    pub file: String,
    pub line: usize,
    pub column: usize,
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
    resource: toml::Spanned<String>,
    /// Required: a route that forgot its handler must not default to forwarding.
    handler: toml::Spanned<String>,
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

/// 1-based line and column of a byte offset in `src`.
fn position(src: &str, offset: usize) -> (usize, usize) {
    let before = &src[..offset.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl RouteTable {
    /// Parse a routes file. `file` is used in messages only.
    pub fn parse(file: &str, src: &str) -> Result<Self, RouteError> {
        let raw: RawTable = toml::from_str(src).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |s| position(src, s.start));
            RouteError {
                file: file.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        let mut table = RouteTable {
            unrouted: raw.unrouted,
            ..Default::default()
        };
        for (index, r) in raw.route.into_iter().enumerate() {
            let err = |message: String| RouteError {
                file: file.to_owned(),
                line: route_line(src, index),
                column: 1,
                message,
            };
            // Errors about one field point at its value.
            let err_at = |span: std::ops::Range<usize>, message: String| {
                let (line, column) = position(src, span.start);
                RouteError {
                    file: file.to_owned(),
                    line,
                    column,
                    message,
                }
            };
            let handler_span = r.handler.span();
            let handler = match r.handler.into_inner().as_str() {
                "upstream" => Handler::Upstream,
                name => Handler::Local(Endpoint::from_name(name).ok_or_else(|| {
                    let known: Vec<&str> = Endpoint::ALL.iter().map(|(_, n)| *n).collect();
                    err_at(
                        handler_span.clone(),
                        format!(
                            "unknown handler `{name}`; known: upstream, {}",
                            known.join(", ")
                        ),
                    )
                })?),
            };
            let resource_span = r.resource.span();
            let resource = r.resource.into_inner();
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
            let (rtype, rid) = resource.split_once("::").ok_or_else(|| {
                err_at(
                    resource_span.clone(),
                    format!("resource `{resource}` is not of the form `Type::id`"),
                )
            })?;
            let resource_id = match rid.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                // Nothing but a handler that resolves the body's user decides
                // such a route: anywhere else the request would go undecided.
                Some("target") => match handler {
                    Handler::Local(e) if e.decides_target() => ResourceId::Target,
                    other => {
                        let deciders: Vec<&str> = Endpoint::ALL
                            .iter()
                            .filter(|(e, _)| e.decides_target())
                            .map(|(_, n)| *n)
                            .collect();
                        return Err(err_at(
                            resource_span,
                            format!(
                                "resource `{resource}` is named in the request body, which only \
                                 the handlers {} decide; with handler `{other}` the request \
                                 would go undecided",
                                deciders.join(", ")
                            ),
                        ));
                    }
                },
                Some(p) => {
                    if !segments.contains(&Segment::Param(p.to_owned())) {
                        return Err(err_at(
                            resource_span,
                            format!(
                                "resource `{resource}` names `{{{p}}}`, which path `{}` does not have",
                                r.path
                            ),
                        ));
                    }
                    ResourceId::Param(p.to_owned())
                }
                None => ResourceId::Fixed(rid.to_owned()),
            };
            // A parameter named twice would leave `{name}` meaning either value.
            let mut names: Vec<&str> = segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Param(p) => Some(p.as_str()),
                    Segment::Literal(_) => None,
                })
                .collect();
            names.sort_unstable();
            if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
                return Err(err(format!(
                    "path `{}` names the parameter `{{{}}}` twice",
                    r.path, w[0]
                )));
            }
            // Two routes of one method with the same literals in the same places
            // match the same requests, whatever their parameters are called:
            // the later one would never be reached.
            let same_requests = |o: &Route| {
                o.method == method
                    && o.segments.len() == segments.len()
                    && o.segments.iter().zip(&segments).all(|pair| match pair {
                        (Segment::Literal(a), Segment::Literal(b)) => a == b,
                        (Segment::Param(_), Segment::Param(_)) => true,
                        _ => false,
                    })
            };
            if let Some(o) = table.routes.iter().find(|o| same_requests(o)) {
                let message = if o.template == r.path {
                    format!("route `{method} {}` is listed twice", r.path)
                } else {
                    format!(
                        "route `{method} {}` matches the same requests as `{method} {}`",
                        r.path, o.template
                    )
                };
                return Err(err(message));
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
                handler,
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
handler = "upstream"

[[route]]
method = "POST"
path = "/stream/{id}"
action = "x"
resource = "Stream::{id}"
handler = "upstream"

[[route]]
method = "POST"
path = "/stream/validate"
action = "validateStream"
resource = "OrgResource::streams"
handler = "upstream"
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
    fn routes_that_match_the_same_requests_are_refused() {
        let route = |path: &str| {
            format!(
                "[[route]]\nmethod = \"GET\"\npath = \"{path}\"\naction = \"x\"\nresource = \"OrgResource::streams\"\nhandler = \"upstream\"\n"
            )
        };
        let e =
            RouteTable::parse("routes.toml", &(route("/a/{x}") + &route("/a/{y}"))).unwrap_err();
        assert_eq!(e.line, 7, "{e}");
        assert!(
            e.message.contains("the same requests as `GET /a/{x}`"),
            "{e}"
        );
        let e = RouteTable::parse("routes.toml", &route("/a/{x}/{x}")).unwrap_err();
        assert!(e.message.contains("`{x}` twice"), "{e}");
        // Different literals, or a literal against a parameter, are two routes.
        assert!(RouteTable::parse("routes.toml", &(route("/a/{x}") + &route("/b/{x}"))).is_ok());
        assert!(RouteTable::parse("routes.toml", &(route("/a/{x}") + &route("/a/b"))).is_ok());
    }

    #[test]
    fn errors_name_the_line() {
        let bad = "[[route]]\nmethod = \"GET\"\npath = \"/a/{id}\"\naction = \"x\"\nresource = \"Stream::{sid}\"\nhandler = \"upstream\"\n";
        let e = RouteTable::parse("routes.toml", bad).unwrap_err();
        assert_eq!((e.line, e.column), (5, 12));
        assert!(e.message.contains("{sid}"));
        let e = RouteTable::parse("routes.toml", "[[route]]\nmethod = 3\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    /// A route table entry built from its fields, for the refusal tests.
    fn one_route(resource: &str, handler: Option<&str>) -> String {
        let handler = handler.map_or(String::new(), |h| format!("handler = \"{h}\"\n"));
        format!(
            "[[route]]\nmethod = \"PUT\"\npath = \"/user/permission\"\naction = \"editUserRole\"\nresource = \"{resource}\"\n{handler}"
        )
    }

    #[test]
    fn a_route_that_could_go_undecided_is_refused() {
        // A body-named resource on a forwarded route: nothing would decide it.
        let e = RouteTable::parse(
            "routes.toml",
            &one_route("User::{target}", Some("upstream")),
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (5, 12), "{e}");
        assert!(e.message.contains("undecided"), "{e}");
        // The same on a local handler that does not resolve the body's user.
        let e = RouteTable::parse(
            "routes.toml",
            &one_route("User::{target}", Some("users.get")),
        )
        .unwrap_err();
        assert!(e.message.contains("undecided"), "{e}");
        // An unknown handler (a typo) is refused where it is written.
        let e = RouteTable::parse(
            "routes.toml",
            &one_route("User::{target}", Some("users.rol")),
        )
        .unwrap_err();
        assert_eq!((e.line, e.column), (6, 11), "{e}");
        assert!(e.message.contains("unknown handler `users.rol`"), "{e}");
        // A route without a handler does not default to forwarding.
        let e = RouteTable::parse("routes.toml", &one_route("User::{target}", None)).unwrap_err();
        assert!(e.message.contains("handler"), "{e}");
        // The one valid combination.
        let t = RouteTable::parse(
            "routes.toml",
            &one_route("User::{target}", Some("users.role")),
        )
        .unwrap();
        assert_eq!(t.routes()[0].handler, Handler::Local(Endpoint::UsersRole));
    }

    #[test]
    fn every_endpoint_name_reads_back() {
        for (e, name) in Endpoint::ALL {
            assert_eq!(Endpoint::from_name(name), Some(e));
            assert_eq!(e.name(), name);
        }
    }
}
