//! Body types other than axum's: the guard needs no glue code, whatever the inner
//! service's request and response bodies are.

use std::{convert::Infallible, sync::Arc};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use keygate::{ApiKeyGuard, EmptyRejection, InMemoryRegistry, KeyGrant, KeyRegistry, Principal};
use serde_json::Value;
use tower::{ServiceBuilder, ServiceExt};

use crate::{
    support::{TestServer, send},
    unregistered_key,
};

/// Answers `hello <principal id>` (or `hello nobody`) in a `Full<Bytes>` body.
pub(crate) async fn hello<B>(request: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
    let who = request
        .extensions()
        .get::<Principal>()
        .map_or("nobody", |p| p.id())
        .to_owned();
    Ok(Response::new(Full::new(Bytes::from(format!(
        "hello {who}"
    )))))
}

async fn empty<B>(request: Request<B>) -> Result<Response<Empty<Bytes>>, Infallible> {
    assert!(request.extensions().get::<Principal>().is_some());
    Ok(Response::new(Empty::new()))
}

pub(crate) fn request<B>(key: Option<&str>, body: B) -> Request<B> {
    let mut builder = Request::get("/jobs").header("user-agent", "body-test/1");
    if let Some(key) = key {
        builder = builder.header("x-api-key", key);
    }
    builder.body(body).unwrap()
}

#[tokio::test]
async fn full_bytes_service_is_guarded_without_glue() {
    let registry = Arc::new(InMemoryRegistry::new());
    let issued = registry.issue(KeyGrant::new("svc")).await.unwrap();
    let key = issued.key.expose_secret();
    let guard = ApiKeyGuard::builder()
        .registry(registry.clone())
        .build()
        .unwrap();

    // Driven directly: request body `String`, response body `Full<Bytes>`.
    let service = ServiceBuilder::new()
        .layer(guard.clone())
        .service(tower::service_fn(hello::<String>));
    let response = service
        .clone()
        .oneshot(request(Some(key), String::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "hello svc");

    let response = service
        .clone()
        .oneshot(request(None, String::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert!(response.headers().contains_key("www-authenticate"));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], 401);
    assert_eq!(body["error"]["reason"], "missing_credentials");

    // Over the wire (hyper, through `axum::serve`): the guard still answers in
    // `Full<Bytes>`; only the server's own body type is converted, outside the guard.
    let service = ServiceBuilder::new()
        .layer(guard)
        .service(tower::service_fn(hello::<Body>))
        .map_response(|response: Response<Full<Bytes>>| response.map(Body::new));
    let server = TestServer::start(service).await;
    let reply = send(server.get_with_key("/jobs", key)).await;
    assert_eq!(reply.assert_ok(), "hello svc");
    send(server.get_with_key("/jobs", &unregistered_key()))
        .await
        .assert_refusal(401, "invalid_credentials");
    send(server.get("/jobs"))
        .await
        .assert_refusal(401, "missing_credentials");
}

#[tokio::test]
async fn empty_rejection_serves_an_empty_body_service() {
    let registry = Arc::new(InMemoryRegistry::new());
    let issued = registry.issue(KeyGrant::new("svc")).await.unwrap();
    let guard = ApiKeyGuard::builder()
        .registry(registry.clone())
        .render_with(EmptyRejection)
        .build()
        .unwrap();
    let service = ServiceBuilder::new()
        .layer(guard)
        .service(tower::service_fn(empty::<Empty<Bytes>>));

    let response = service
        .clone()
        .oneshot(request(Some(issued.key.expose_secret()), Empty::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    for (key, reason) in [
        (None, "missing_credentials"),
        (Some(unregistered_key()), "invalid_credentials"),
        (Some("a".repeat(600)), "malformed_credentials"),
    ] {
        let response = service
            .clone()
            .oneshot(request(key.as_deref(), Empty::new()))
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()["x-keygate-reason"], reason);
        assert_eq!(
            response.headers()["www-authenticate"],
            r#"ApiKey realm="api""#
        );
        assert!(!response.headers().contains_key("content-type"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(body.is_empty());
    }
}
