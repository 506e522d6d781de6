//! One test per refusal of each policy, through `oneshot` on a `service_fn` (no network).

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    pin::pin,
    task::{Context, Poll, Waker},
};

use http::{Method, Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt, service_fn, util::ServiceFn};

use super::{Refusal, Require, RequirePolicy, RequireScope, RequireWorkspace, ResponseFuture};
use crate::{
    AuditEvent, EmptyRejection, KeyDigest, KeyId, KeyRecord, Principal, Rejection,
    audit::MemorySink,
};

/// A request for `uri`, with a principal when `principal` is given.
fn request(uri: &str, principal: Option<Principal>) -> Request<String> {
    let mut request = Request::get(uri).body(String::new()).unwrap();
    if let Some(principal) = principal {
        request.extensions_mut().insert(principal);
    }
    request
}

fn principal(id: &str, scopes: &[&str], workspaces: &[&str]) -> Principal {
    let record = KeyRecord::new(KeyId::generate().unwrap(), KeyDigest::of(id.as_bytes()), id)
        .with_scopes(scopes.iter().copied())
        .with_workspaces(workspaces.iter().copied());
    Principal::new(record.into())
}

/// The handler behind every layer under test: 200 `inner`.
type Handler = ServiceFn<fn(Request<String>) -> Ready<Result<Response<String>, Infallible>>>;

fn inner(_: Request<String>) -> Ready<Result<Response<String>, Infallible>> {
    ready(Ok(Response::new(String::from("inner"))))
}

/// Sends `request` through `layer` to the [`Handler`].
async fn send<L>(layer: L, request: Request<String>) -> Response<String>
where
    L: Layer<Handler>,
    L::Service: Service<Request<String>, Response = Response<String>, Error = Infallible>,
{
    let handler: Handler = service_fn(inner);
    let Ok(response) = layer.layer(handler).oneshot(request).await;
    response
}

fn assert_refused(response: &Response<String>, reason: &str) {
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(
        response.body().contains(&format!(r#""reason":"{reason}""#)),
        "{}",
        response.body()
    );
}

fn only_event(audit: &MemorySink) -> AuditEvent {
    let mut events = audit.take();
    assert_eq!(events.len(), 1, "{events:?}");
    events.remove(0)
}

#[tokio::test]
async fn scope_held_goes_on() {
    let admin = principal("admin", &["admin"], &[]);
    let response = send(RequireScope::new("admin"), request("/admin", Some(admin))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "inner");
}

#[tokio::test]
async fn insufficient_scope_when_the_key_lacks_it() {
    let audit = MemorySink::new();
    let layer = RequireScope::new("admin").audit(audit.clone());
    let reader = principal("reader", &["jobs:read"], &["ws-1"]);
    let key_id = reader.key_id();
    let mut request = request("/admin/keys", Some(reader));
    request
        .headers_mut()
        .insert("x-request-id", "req-1".parse().unwrap());

    let response = send(layer, request).await;

    assert_refused(&response, "insufficient_scope");
    let event = only_event(&audit);
    assert_eq!(event.action, "GET /admin/keys");
    assert_eq!(event.reason.as_deref(), Some("insufficient_scope"));
    assert_eq!(event.principal_id.as_deref(), Some("reader"));
    assert_eq!(event.key_id, key_id);
    assert_eq!(event.request_id.as_deref(), Some("req-1"));
    assert_eq!(event.workspace, None);
}

#[tokio::test]
async fn insufficient_scope_without_a_principal() {
    let audit = MemorySink::new();
    let response = send(
        RequireScope::new("admin").audit(audit.clone()),
        request("/admin", None),
    )
    .await;
    assert_refused(&response, "insufficient_scope");
    assert_eq!(only_event(&audit).principal_id, None);
}

#[tokio::test]
async fn workspace_allowed_goes_on_from_each_source() {
    let layers = [
        RequireWorkspace::header("x-workspace-id"),
        RequireWorkspace::path_segment_after("workspaces"),
        RequireWorkspace::query("workspaceId"),
    ];
    for layer in layers {
        let mut request = request(
            "/workspaces/ws-1/jobs?workspaceId=ws-1",
            Some(principal("c", &[], &["ws-1"])),
        );
        request
            .headers_mut()
            .insert("x-workspace-id", "ws-1".parse().unwrap());
        let response = send(layer.clone(), request).await;
        assert_eq!(response.status(), StatusCode::OK, "{layer:?}");
    }
}

#[tokio::test]
async fn workspace_forbidden_names_the_workspace_asked_for() {
    let audit = MemorySink::new();
    let layer = RequireWorkspace::path_segment_after("workspaces").audit(audit.clone());
    let caller = principal("coordinator", &[], &["ws-1"]);

    let response = send(layer, request("/workspaces/ws-2/jobs", Some(caller))).await;

    assert_refused(&response, "workspace_forbidden");
    let event = only_event(&audit);
    assert_eq!(event.reason.as_deref(), Some("workspace_forbidden"));
    assert_eq!(event.workspace.as_deref(), Some("ws-2"));
    assert_eq!(event.principal_id.as_deref(), Some("coordinator"));
}

#[tokio::test]
async fn workspace_forbidden_when_none_is_named() {
    let audit = MemorySink::new();
    let caller = principal("coordinator", &[], &["ws-1"]);
    for uri in ["/jobs", "/workspaces", "/workspaces/", "/workspaces//jobs"] {
        let layer = RequireWorkspace::path_segment_after("workspaces").audit(audit.clone());
        let response = send(layer, request(uri, Some(caller.clone()))).await;
        assert_refused(&response, "workspace_forbidden");
        assert_eq!(only_event(&audit).workspace, None, "{uri}");
    }
}

#[tokio::test]
async fn workspace_forbidden_when_named_twice() {
    let caller = principal("coordinator", &[], &["ws-1"]);

    let twice = request(
        "/jobs?workspaceId=ws-1&workspaceId=ws-1",
        Some(caller.clone()),
    );
    let response = send(RequireWorkspace::query("workspaceId"), twice).await;
    assert_refused(&response, "workspace_forbidden");

    let mut twice = request("/jobs", Some(caller));
    twice
        .headers_mut()
        .append("x-workspace-id", "ws-1".parse().unwrap());
    twice
        .headers_mut()
        .append("x-workspace-id", "ws-1".parse().unwrap());
    let response = send(RequireWorkspace::header("x-workspace-id"), twice).await;
    assert_refused(&response, "workspace_forbidden");
}

#[tokio::test]
async fn workspace_forbidden_without_a_principal() {
    let audit = MemorySink::new();
    let layer = RequireWorkspace::query("workspaceId").audit(audit.clone());
    let response = send(layer, request("/jobs?workspaceId=ws-1", None)).await;
    assert_refused(&response, "workspace_forbidden");
    assert_eq!(only_event(&audit).workspace.as_deref(), Some("ws-1"));
}

/// A policy a user writes: only one principal may call; refusals name the workspace
/// given in `X-Workspace-Id`, for the audit record.
#[derive(Clone, Debug)]
struct PrincipalIs(&'static str);

impl<B> RequirePolicy<B> for PrincipalIs {
    fn check(&self, request: &Request<B>, principal: Option<&Principal>) -> Result<(), Refusal> {
        if principal.is_some_and(|p| p.id() == self.0) {
            return Ok(());
        }
        let refusal = Refusal::from(Rejection::InsufficientScope {
            scope: self.0.into(),
        });
        match request
            .headers()
            .get("x-workspace-id")
            .and_then(|v| v.to_str().ok())
        {
            Some(workspace) => Err(refusal.with_workspace(workspace)),
            None => Err(refusal),
        }
    }
}

#[tokio::test]
async fn a_policy_of_ones_own() {
    let audit = MemorySink::new();
    let layer = Require::custom(PrincipalIs("ops")).audit(audit.clone());

    let ops = request("/drain", Some(principal("ops", &[], &[])));
    assert_eq!(send(layer.clone(), ops).await.status(), StatusCode::OK);

    let mut other = request("/drain", Some(principal("reporting", &[], &[])));
    other
        .headers_mut()
        .insert("x-workspace-id", "ws-9".parse().unwrap());
    assert_refused(&send(layer, other).await, "insufficient_scope");
    let event = only_event(&audit);
    assert_eq!(event.principal_id.as_deref(), Some("reporting"));
    assert_eq!(event.workspace.as_deref(), Some("ws-9"));
}

#[tokio::test]
async fn a_closure_is_a_policy() {
    let writes_need_a_principal =
        Require::custom(|request: &Request<String>, principal: Option<&Principal>| {
            if request.method() == Method::GET || principal.is_some() {
                Ok(())
            } else {
                Err(Rejection::WorkspaceForbidden)
            }
        });
    let get = request("/jobs", None);
    assert_eq!(
        send(writes_need_a_principal.clone(), get).await.status(),
        StatusCode::OK
    );
    let mut post = request("/jobs", None);
    *post.method_mut() = Method::POST;
    assert_refused(
        &send(writes_need_a_principal, post).await,
        "workspace_forbidden",
    );
}

#[tokio::test]
async fn refusals_render_with_the_renderer_given() {
    let layer = RequireScope::new("admin").render_with(EmptyRejection);
    let response = send(layer, request("/admin", None)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(response.body(), "");
}

#[tokio::test]
async fn audit_records_cap_what_they_repeat() {
    let audit = MemorySink::new();
    let layer = RequireWorkspace::query("workspaceId").audit(audit.clone());
    // A workspace of 401 bytes once decoded: "a" and 200 two-byte characters.
    let uri = format!("/{}?workspaceId=a{}", "p".repeat(600), "%C3%A9".repeat(200));
    let mut request = request(&uri, None);
    request
        .headers_mut()
        .insert("x-request-id", "r".repeat(300).parse().unwrap());

    send(layer, request).await;

    let event = only_event(&audit);
    assert_eq!(event.action, format!("GET /{}", "p".repeat(511)));
    // 256 bytes would cut a character in two: the cut is one byte earlier.
    assert_eq!(event.workspace, Some(format!("a{}", "é".repeat(127))));
    assert_eq!(event.request_id, Some("r".repeat(256)));
}

#[test]
#[should_panic(expected = "future polled after completion")]
fn a_refusal_polled_again_panics() {
    let refusal = ResponseFuture::<Ready<Result<_, Infallible>>, _>::reject(Response::new(()));
    let mut future = pin!(refusal);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(future.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    let _ = future.as_mut().poll(&mut cx);
}
