//! What an audit record says about the request behind a decision, taken before the
//! request moves on: for the guard and the [`Require`](crate::require::Require) layers alike.

use std::net::IpAddr;

use http::{HeaderName, Request, header};

use crate::{AuditEvent, Outcome};

/// The request id's header. A name, not a string, so that it is not parsed per request.
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest path or action, in bytes, an audit record repeats.
const MAX_ACTION: usize = 512;
/// The longest header value (request id, user agent) or workspace, in bytes, an audit
/// record repeats.
pub(crate) const MAX_FIELD: usize = 256;

/// The request's side of an audit record. Lengths are capped: unauthenticated input must
/// not make audit records grow without bound.
#[derive(Debug)]
pub(crate) struct RequestFacts {
    action: String,
    request_id: Option<String>,
    user_agent: Option<String>,
    client_ip: Option<IpAddr>,
}

impl RequestFacts {
    /// The facts of an HTTP request: method and path, request id, user agent.
    pub(crate) fn of<B>(request: &Request<B>, client_ip: Option<IpAddr>) -> Self {
        let header = |name: &HeaderName| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| truncate(v, MAX_FIELD).to_owned())
        };
        RequestFacts {
            action: format!(
                "{} {}",
                request.method(),
                truncate(request.uri().path(), MAX_ACTION)
            ),
            request_id: header(&X_REQUEST_ID),
            user_agent: header(&header::USER_AGENT),
            client_ip,
        }
    }

    /// The facts of a decision made outside a request (a key in a WebSocket message, see
    /// [`ApiKeyGuard::authenticate`](crate::ApiKeyGuard::authenticate)).
    pub(crate) fn named(action: &str, client_ip: Option<IpAddr>) -> Self {
        RequestFacts {
            action: truncate(action, MAX_ACTION).to_owned(),
            request_id: None,
            user_agent: None,
            client_ip,
        }
    }

    /// An audit event with these facts, which move into it: no string is copied.
    pub(crate) fn into_event(self, outcome: Outcome) -> AuditEvent {
        let mut event = AuditEvent::new(self.action, outcome);
        event.request_id = self.request_id;
        event.user_agent = self.user_agent;
        event.client_ip = self.client_ip;
        event
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_keeps_short_text_and_cuts_on_a_character_boundary() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "abc");
        // "é" is two bytes: a cut in its middle goes back to before it.
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("", 0), "");
    }
}
