//! `RequireWorkspace` reads the workspace the router extracts, never another segment:
//! checked over a real connection against axum's own path extraction.

use axum::{Router, extract::Path, routing::get};
use keygate::{ApiKey, ApiKeyGuard, KeyGrant, require::RequireWorkspace};

use crate::support::{TestServer, random_key, send};

/// The route of the hostile review: a file route whose earlier segments may spell
/// `workspaces` too. The handler answers the workspace axum extracted.
const ROUTE: &str = "/files/{folder}/{name}/workspaces/{ws}";

/// A server for `ROUTE` behind the guard and `layer`, and a key allowed only `ws-1`.
async fn serve(layer: RequireWorkspace) -> (TestServer, String) {
    let key = random_key();
    let guard = ApiKeyGuard::builder()
        .key(
            ApiKey::new(&key).unwrap(),
            KeyGrant::new("coordinator").workspaces(["ws-1"]),
        )
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            ROUTE,
            get(|Path((_, _, ws)): Path<(String, String, String)>| async move { ws }),
        )
        .route_layer(layer)
        .layer(guard);
    (TestServer::start(app).await, key)
}

#[tokio::test]
async fn path_param_checks_the_segment_the_router_hands_the_handler() {
    let (server, key) = serve(RequireWorkspace::path_param(ROUTE, "ws")).await;

    // The first `workspaces` is followed by the allowed `ws-1`; axum extracts `ws-2`.
    send(server.get_with_key("/files/workspaces/ws-1/workspaces/ws-2", &key))
        .await
        .assert_refusal(403, "workspace_forbidden");
    send(server.get_with_key("/files/a/workspaces/workspaces/ws-2", &key))
        .await
        .assert_refusal(403, "workspace_forbidden");
    // Allowed, however the earlier segments read; the handler sees what was checked.
    for path in [
        "/files/a/b/workspaces/ws-1",
        "/files/workspaces/ws-2/workspaces/ws-1",
        // axum percent-decodes parameters: `ws%2D1` is `ws-1` for both.
        "/files/a/b/workspaces/ws%2D1",
    ] {
        assert_eq!(
            send(server.get_with_key(path, &key)).await.assert_ok(),
            "ws-1",
            "{path}"
        );
    }
    send(server.get_with_key("/files/a/b/workspaces/ws%2D2", &key))
        .await
        .assert_refusal(403, "workspace_forbidden");
}

#[tokio::test]
async fn path_segment_after_refuses_a_path_that_names_the_marker_twice() {
    let (server, key) = serve(RequireWorkspace::path_segment_after("workspaces")).await;

    for path in [
        "/files/workspaces/ws-1/workspaces/ws-2",
        // Even when both name the allowed workspace: which one the router takes is not
        // the layer's to guess.
        "/files/workspaces/ws-1/workspaces/ws-1",
    ] {
        send(server.get_with_key(path, &key))
            .await
            .assert_refusal(403, "workspace_forbidden");
    }
    assert_eq!(
        send(server.get_with_key("/files/a/b/workspaces/ws-1", &key))
            .await
            .assert_ok(),
        "ws-1"
    );
}
