//! The audit record of a refusal.

use http::Request;

use crate::{AuditEvent, AuditSink, Outcome, Principal, Rejection};

/// The longest path, in bytes, an audit record repeats.
const MAX_PATH: usize = 512;
/// The longest workspace or request id, in bytes, an audit record repeats.
const MAX_FIELD: usize = 256;

/// Records in `sink` that `request` was refused with `rejection`: method and path, the
/// reason, the principal and key (when the guard inserted one), the `workspace` the
/// policy named, and the `X-Request-Id`. Each text taken from the request is cut to a
/// fixed length (on a character boundary).
pub(crate) fn audit_refusal<B>(
    sink: &dyn AuditSink,
    request: &Request<B>,
    rejection: &Rejection,
    workspace: Option<&str>,
) {
    let path = truncate(request.uri().path(), MAX_PATH);
    let mut event = AuditEvent::new(format!("{} {path}", request.method()), Outcome::Refused)
        .with_reason(rejection.reason());
    if let Some(principal) = request.extensions().get::<Principal>() {
        event = event
            .with_principal_id(principal.id())
            .with_key_id(principal.key_id());
    }
    if let Some(workspace) = workspace {
        event = event.with_workspace(truncate(workspace, MAX_FIELD));
    }
    if let Some(id) = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
    {
        event = event.with_request_id(truncate(id, MAX_FIELD));
    }
    sink.record(event);
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
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
