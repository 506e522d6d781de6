//! [`PathTemplate`]: a route's path parameter, read the way a router extracts it.

use std::borrow::Cow;

/// Why a [`PathTemplate`] could not be made.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathTemplateError {
    /// The template does not start with `/`.
    #[error("path template `{0}` must start with `/`")]
    NotAbsolute(String),
    /// A segment is neither literal text nor a whole `{name}` / `{*name}`.
    #[error("path template segment `{0}` must be literal text, `{{name}}` or `{{*name}}`")]
    BadSegment(String),
    /// A `{*name}` wildcard that is not the last segment.
    #[error("the wildcard `{0}` must be the last segment of the path template")]
    WildcardNotLast(String),
    /// The parameter to read is not in the template, or is a wildcard.
    #[error("path template has no `{{{0}}}` segment")]
    NoSuchParam(String),
    /// Two segments have the same parameter name.
    #[error("path template names `{{{0}}}` twice")]
    ParamTwice(String),
}

/// One segment of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    /// `{*name}`: one or more segments, the rest of the path.
    Wildcard,
}

/// A route's path template (`/files/{folder}/{name}/workspaces/{ws}`, axum's and
/// matchit's syntax) and the parameter to read from it.
///
/// A request path matches when it has as many segments as the template (a trailing
/// `{*rest}` takes one or more), each literal segment is equal, and no parameter is
/// empty: the same rules the router uses to pick the route. The parameter is then the
/// segment at its position, percent-decoded as the router decodes it, so that a layer
/// and the handler always see the same value. A path that does not match names nothing.
///
/// ```
/// use keygate::require::PathTemplate;
///
/// let template = PathTemplate::new("/files/{folder}/{name}/workspaces/{ws}", "ws")?;
/// // The router gives the handler `ws-2` here, not the `ws-1` after the first `workspaces`.
/// let ws = template.capture("/files/workspaces/ws-1/workspaces/ws-2");
/// assert_eq!(ws.as_deref(), Some("ws-2"));
/// assert_eq!(template.capture("/files/a/b/workspaces/ws%2D1").as_deref(), Some("ws-1"));
/// assert_eq!(template.capture("/files/a/b/workspaces/ws-1/"), None);
/// # Ok::<(), keygate::require::PathTemplateError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    template: String,
    param: String,
    segments: Vec<Segment>,
    /// Where the parameter is among the segments.
    position: usize,
}

impl PathTemplate {
    /// The template of a route and the name of the parameter to read.
    ///
    /// # Errors
    ///
    /// [`PathTemplateError`] when the template is not absolute, has a malformed segment or
    /// a wildcard before its end, names a parameter twice, or has no `{param}` segment.
    pub fn new(template: &str, param: &str) -> Result<Self, PathTemplateError> {
        let Some(rest) = template.strip_prefix('/') else {
            return Err(PathTemplateError::NotAbsolute(template.to_owned()));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (index, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(inner) => {
                    let (wildcard, name) = match inner.strip_prefix('*') {
                        Some(name) => (true, name),
                        None => (false, inner),
                    };
                    if name.is_empty() || name.contains(['{', '}', '*']) {
                        return Err(PathTemplateError::BadSegment((*part).to_owned()));
                    }
                    if names.contains(&name) {
                        return Err(PathTemplateError::ParamTwice(name.to_owned()));
                    }
                    names.push(name);
                    if wildcard {
                        if index + 1 != parts.len() {
                            return Err(PathTemplateError::WildcardNotLast((*part).to_owned()));
                        }
                        Segment::Wildcard
                    } else {
                        Segment::Param(name.to_owned())
                    }
                }
                None if part.contains(['{', '}']) => {
                    return Err(PathTemplateError::BadSegment((*part).to_owned()));
                }
                None => Segment::Literal((*part).to_owned()),
            };
            segments.push(segment);
        }
        let position = segments
            .iter()
            .position(|s| matches!(s, Segment::Param(name) if name == param))
            .ok_or_else(|| PathTemplateError::NoSuchParam(param.to_owned()))?;
        Ok(Self {
            template: template.to_owned(),
            param: param.to_owned(),
            segments,
            position,
        })
    }

    /// The template, as given.
    #[must_use]
    pub fn template(&self) -> &str {
        &self.template
    }

    /// The name of the parameter read.
    #[must_use]
    pub fn param(&self) -> &str {
        &self.param
    }

    /// The parameter's value in `path`, percent-decoded, if `path` matches the template
    /// and the value is non-empty UTF-8.
    #[must_use]
    pub fn capture<'a>(&self, path: &'a str) -> Option<Cow<'a, str>> {
        let mut parts = path.strip_prefix('/')?.split('/');
        let mut found = None;
        let mut rest_taken = false;
        for (index, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Wildcard => {
                    // One or more segments, none of them looked at.
                    parts.next().filter(|first| !first.is_empty())?;
                    rest_taken = true;
                }
                Segment::Literal(literal) => {
                    if parts.next()? != literal {
                        return None;
                    }
                }
                Segment::Param(_) => {
                    let value = parts.next().filter(|v| !v.is_empty())?;
                    if index == self.position {
                        found = Some(value);
                    }
                }
            }
        }
        if !rest_taken && parts.next().is_some() {
            return None;
        }
        let decoded = percent_encoding::percent_decode_str(found?)
            .decode_utf8()
            .ok()?;
        Some(decoded).filter(|value| !value.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_templates_are_named() {
        let cases = [
            ("ws/{ws}", PathTemplateError::NotAbsolute("ws/{ws}".into())),
            ("/ws/{ws", PathTemplateError::BadSegment("{ws".into())),
            ("/ws/x{ws}", PathTemplateError::BadSegment("x{ws}".into())),
            ("/ws/{}", PathTemplateError::BadSegment("{}".into())),
            (
                "/{*rest}/{ws}",
                PathTemplateError::WildcardNotLast("{*rest}".into()),
            ),
            ("/{ws}/{ws}", PathTemplateError::ParamTwice("ws".into())),
            ("/ws/{id}", PathTemplateError::NoSuchParam("ws".into())),
            ("/ws/{*ws}", PathTemplateError::NoSuchParam("ws".into())),
        ];
        for (template, error) in cases {
            assert_eq!(PathTemplate::new(template, "ws"), Err(error), "{template}");
        }
    }

    #[test]
    fn only_a_path_of_the_templates_shape_names_a_value() {
        let template = PathTemplate::new("/workspaces/{ws}/jobs/{*rest}", "ws").unwrap();
        assert_eq!(
            template.capture("/workspaces/ws-1/jobs/a").as_deref(),
            Some("ws-1")
        );
        assert_eq!(
            template.capture("/workspaces/ws-1/jobs/a/b").as_deref(),
            Some("ws-1")
        );
        for path in [
            "/workspaces/ws-1/jobs",
            "/workspaces/ws-1/jobs/",
            "/workspaces//jobs/a",
            "/workspaces/ws-1/other/a",
            "workspaces/ws-1/jobs/a",
            "/workspaces/%FF/jobs/a",
            "",
        ] {
            assert_eq!(template.capture(path), None, "{path}");
        }
    }
}
