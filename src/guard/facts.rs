//! What the audit record of a decision says about the request, taken before the request
//! moves on (or, for [`ApiKeyGuard::authenticate`](super::ApiKeyGuard::authenticate), given
//! by the caller).

use std::net::IpAddr;

use http::{Request, header};

use crate::{AuditEvent, Outcome};

/// The request's side of an audit record. Lengths are capped: unauthenticated input must
/// not make audit records grow without bound.
#[derive(Debug)]
pub(crate) struct Facts {
    action: String,
    request_id: Option<String>,
    user_agent: Option<String>,
    client_ip: Option<IpAddr>,
}

impl Facts {
    /// The facts of an HTTP request: method and path, request id, user agent.
    pub(crate) fn of<B>(request: &Request<B>, client_ip: Option<IpAddr>) -> Self {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| truncate(v, 256).to_owned())
        };
        Facts {
            action: format!(
                "{} {}",
                request.method(),
                truncate(request.uri().path(), 512)
            ),
            request_id: header("x-request-id"),
            user_agent: header(header::USER_AGENT.as_str()),
            client_ip,
        }
    }

    /// The facts of a decision made outside a request (a key in a WebSocket message).
    pub(crate) fn named(action: &str, client_ip: Option<IpAddr>) -> Self {
        Facts {
            action: truncate(action, 512).to_owned(),
            request_id: None,
            user_agent: None,
            client_ip,
        }
    }

    /// An audit event with these facts.
    pub(crate) fn event(&self, outcome: Outcome) -> AuditEvent {
        let mut event = AuditEvent::new(self.action.clone(), outcome);
        if let Some(id) = &self.request_id {
            event = event.with_request_id(id.clone());
        }
        if let Some(agent) = &self.user_agent {
            event = event.with_user_agent(agent.clone());
        }
        if let Some(ip) = self.client_ip {
            event = event.with_client_ip(ip);
        }
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
