//! The audit record of a refusal.

use http::Request;

use crate::{AuditSink, Outcome, Principal, Rejection, audit::RequestFacts};

/// Records in `sink` that `request` was refused with `rejection`: the request's facts
/// (method and path, request id, user agent; cut to fixed lengths), the reason, the
/// principal and key (when the guard inserted one), and the `workspace` the policy named.
pub(crate) fn audit_refusal<B>(
    sink: &dyn AuditSink,
    request: &Request<B>,
    rejection: &Rejection,
    workspace: Option<&str>,
) {
    let mut event = RequestFacts::of(request, None)
        .into_event(Outcome::Refused)
        .with_reason(rejection.reason());
    if let Some(principal) = request.extensions().get::<Principal>() {
        event = event.with_principal(principal);
    }
    if let Some(workspace) = workspace {
        event = event.with_workspace(crate::audit::truncate(workspace, crate::audit::MAX_FIELD));
    }
    sink.record(event);
}
