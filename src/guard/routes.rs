//! Route policy (request path stage 1): which routes are public, which take an optional
//! credential, and what the others require beyond a valid one.

use std::{collections::HashMap, fmt, num::NonZeroU32, sync::Arc};

use foldhash::fast::RandomState;

use http::{HeaderMap, Method, header};

/// A rule for the routes under one path: what a request there needs.
///
/// Paths are matched the way axum's router (matchit) matches them: on the raw path, by
/// whole segments, case-sensitively, without decoding or normalizing anything. So a path
/// the guard does not see as `/docs/…` is not routed to `/docs/…` handlers either:
/// `//docs/x`, `/DOCS/x`, `/d%6Fcs/x`, `/docs%2Fx` and `/docsx` are not under
/// `/docs`, and `/docs/../admin` is routed to the `/docs/{*rest}` handler, not to
/// `/admin`. A trailing slash is a segment of its own: exact `/health` is not
/// `/health/`.
///
/// When several rules match, the most specific wins: an exact path over a prefix, a
/// longer prefix over a shorter one, and a rule for the request's method over a rule for
/// every method. Two rules for the same path and methods are refused at
/// [`build`](super::ApiKeyGuardBuilder::build). A request no rule matches needs a valid
/// credential (deny by default).
///
/// ```
/// use std::num::NonZeroU32;
///
/// use http::Method;
/// use keygate::{ApiKey, ApiKeyGuard, KeyGrant, guard::Route};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let guard = ApiKeyGuard::builder()
///     .key(ApiKey::new("an-admin-key-of-at-least-32-characters")?, KeyGrant::new("admin"))
///     .route(Route::exact("/health").public())
///     .route(Route::prefix("/docs").public()) // `/docs` and everything under it
///     .route(Route::prefix("/feed").optional()) // anonymous, or a principal if a key is sent
///     .route(Route::prefix("/admin").scope("admin"))
///     .route(Route::exact("/reports").method(Method::POST).cost(NonZeroU32::new(10).unwrap()))
///     .build()?;
/// # let _ = guard; Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct Route {
    path: String,
    prefix: bool,
    methods: Vec<Method>,
    access: Access,
}

/// What a rule asks of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// No credential needed; one sent is not checked.
    Public,
    /// No credential: anonymous (no principal). A credential: checked as always.
    Optional,
    /// A valid credential, with these scopes, counted at this cost.
    Required(Requirement),
}

/// What a route requires of a valid credential. Cheap to clone (the scopes are shared).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Requirement {
    /// Scopes the principal must all hold; `None`: none.
    pub(crate) scopes: Option<Arc<[String]>>,
    /// The rate-limit cost instead of the limit's own.
    pub(crate) cost: Option<NonZeroU32>,
}

impl Route {
    /// A rule for exactly `path` (e.g. `/health`; not `/health/`).
    pub fn exact(path: &str) -> Self {
        Self::new(path, false)
    }

    /// A rule for `path` and every path under it, on segment boundaries: `/docs` covers
    /// `/docs`, `/docs/` and `/docs/openapi.json`, never `/docsx`.
    pub fn prefix(path: &str) -> Self {
        Self::new(path, true)
    }

    fn new(path: &str, prefix: bool) -> Self {
        Self {
            path: path.to_owned(),
            prefix,
            methods: Vec::new(),
            access: Access::Required(Requirement::default()),
        }
    }

    /// Only for requests with `method` (may be given several times); by default a rule
    /// covers every method.
    pub fn method(mut self, method: Method) -> Self {
        if !self.methods.contains(&method) {
            self.methods.push(method);
        }
        self
    }

    /// No credential needed.
    pub fn public(mut self) -> Self {
        self.access = Access::Public;
        self
    }

    /// Optional authentication: without a credential the request goes on anonymous (no
    /// [`Principal`](crate::Principal) in its extensions); with one, it is checked as on
    /// any route, and a bad one is refused.
    pub fn optional(mut self) -> Self {
        self.access = Access::Optional;
        self
    }

    /// A valid credential holding `scope` (403 `insufficient_scope` otherwise, before the
    /// rate limit counts the request). May be given several times: all are needed.
    pub fn scope(mut self, scope: &str) -> Self {
        let mut requirement = self.requirement();
        let mut scopes = requirement.scopes.as_deref().unwrap_or_default().to_vec();
        scopes.push(scope.to_owned());
        requirement.scopes = Some(scopes.into());
        self.access = Access::Required(requirement);
        self
    }

    /// A valid credential; the request counts `cost` against the rate limit instead of
    /// the limit's own cost.
    pub fn cost(mut self, cost: NonZeroU32) -> Self {
        let mut requirement = self.requirement();
        requirement.cost = Some(cost);
        self.access = Access::Required(requirement);
        self
    }

    /// The requirement so far (none after `public` or `optional`: a rule that requires
    /// something requires a credential).
    fn requirement(&self) -> Requirement {
        self.access.requirement().clone()
    }
}

/// Why a rule was refused at build time.
pub(crate) fn check(route: &Route) -> Result<(), String> {
    let path = &route.path;
    if !path.starts_with('/') {
        return Err(format!("route `{path}` must start with `/`"));
    }
    if route.prefix && path.len() > 1 && path.ends_with('/') {
        return Err(format!(
            "prefix route `{path}` must not end with `/`: `{}` covers it and everything under it",
            path.trim_end_matches('/')
        ));
    }
    let inner = path.strip_suffix('/').unwrap_or(path);
    if inner.len() > 1
        && inner[1..]
            .split('/')
            .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return Err(format!(
            "route `{path}` has an empty, `.` or `..` segment, which no router matches as such"
        ));
    }
    Ok(())
}

/// The rules, compiled for lookup on every request.
#[derive(Clone, Default)]
pub(crate) struct RoutePolicy {
    /// Rules for exact paths. Hashed with foldhash: the tables are filled at build time
    /// only, so a request's path cannot grow a collision chain.
    exact: HashMap<Box<str>, Vec<Rule>, RandomState>,
    /// Rules for prefixes, by prefix (without its trailing `/`; `/` is the root).
    prefixes: HashMap<Box<str>, Vec<Rule>, RandomState>,
    /// Whether CORS preflights pass unauthenticated.
    preflight: bool,
}

#[derive(Clone, Debug)]
struct Rule {
    /// Empty: every method.
    methods: Vec<Method>,
    access: Access,
}

impl Requirement {
    /// Nothing asked of a valid credential beyond its validity.
    const NONE: Self = Self {
        scopes: None,
        cost: None,
    };
}

/// [`Requirement::NONE`], to borrow.
static NO_REQUIREMENT: Requirement = Requirement::NONE;

/// The access a request gets when no rule matches: a valid credential.
pub(crate) static DEFAULT_ACCESS: Access = Access::Required(Requirement::NONE);

impl Access {
    /// What a valid credential must satisfy here: nothing beyond its validity on a public
    /// or optional route.
    pub(crate) fn requirement(&self) -> &Requirement {
        match self {
            Access::Required(requirement) => requirement,
            Access::Public | Access::Optional => &NO_REQUIREMENT,
        }
    }
}

impl RoutePolicy {
    /// Compiles `routes`. Refuses two rules for the same path, kind and methods.
    pub(crate) fn new(routes: Vec<Route>, preflight: bool) -> Result<Self, String> {
        let mut policy = Self {
            preflight,
            ..Self::default()
        };
        for route in routes {
            check(&route)?;
            let key: Box<str> = if route.prefix && route.path.len() > 1 {
                route.path.trim_end_matches('/').into()
            } else {
                route.path.as_str().into()
            };
            let table = if route.prefix {
                &mut policy.prefixes
            } else {
                &mut policy.exact
            };
            let rules = table.entry(key).or_default();
            let same = |rule: &Rule| rule.methods == route.methods && rule.access == route.access;
            if rules.iter().any(same) {
                // The same rule twice (e.g. `public_path("/health")` twice).
                continue;
            }
            let overlaps = rules.iter().any(|rule| {
                rule.methods.is_empty() && route.methods.is_empty()
                    || rule.methods.iter().any(|m| route.methods.contains(m))
            });
            if overlaps {
                let kind = if route.prefix { "prefix" } else { "exact" };
                return Err(format!(
                    "two {kind} rules for `{}` cover the same method: give one rule per path and \
                     method",
                    route.path
                ));
            }
            rules.push(Rule {
                methods: route.methods,
                access: route.access,
            });
        }
        Ok(policy)
    }

    /// The access for a request: the most specific matching rule's, or the default.
    pub(crate) fn access(&self, method: &Method, path: &str, headers: &HeaderMap) -> &Access {
        if self.preflight && is_preflight(method, headers) {
            return &Access::Public;
        }
        if !self.exact.is_empty()
            && let Some(access) = self.exact.get(path).and_then(|rules| pick(rules, method))
        {
            return access;
        }
        if !self.prefixes.is_empty() {
            // The path itself, then each ancestor on a segment boundary, longest first.
            let mut end = path.len();
            loop {
                let candidate = &path[..end];
                let candidate = if candidate.is_empty() { "/" } else { candidate };
                if let Some(access) = self
                    .prefixes
                    .get(candidate)
                    .and_then(|rules| pick(rules, method))
                {
                    return access;
                }
                match path[..end].rfind('/') {
                    Some(slash) if end > 0 => end = slash,
                    _ => break,
                }
            }
        }
        &DEFAULT_ACCESS
    }
}

/// The rule for `method` among one path's rules: a rule naming it, else one for every
/// method.
fn pick<'a>(rules: &'a [Rule], method: &Method) -> Option<&'a Access> {
    rules
        .iter()
        .find(|rule| rule.methods.contains(method))
        .or_else(|| rules.iter().find(|rule| rule.methods.is_empty()))
        .map(|rule| &rule.access)
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl fmt::Debug for RoutePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut exact: Vec<_> = self.exact.keys().collect();
        exact.sort();
        let mut prefixes: Vec<_> = self.prefixes.keys().collect();
        prefixes.sort();
        f.debug_struct("RoutePolicy")
            .field("exact", &exact)
            .field("prefixes", &prefixes)
            .field("preflight", &self.preflight)
            .finish()
    }
}
