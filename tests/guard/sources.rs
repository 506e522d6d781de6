//! Where a credential is read: `X-API-Key` (or another header), `Authorization: Bearer`, a
//! query parameter, `Sec-WebSocket-Protocol`.

use std::net::SocketAddr;

use http::header::WWW_AUTHENTICATE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{
    Fixture, get,
    support::{Reply, TestServer},
};

/// Sends `GET /whoami` with the raw header lines `headers` (names exactly as written) and
/// returns the status and the whole response text.
async fn raw_get(addr: SocketAddr, headers: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET /whoami HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let status = text["HTTP/1.1 ".len().."HTTP/1.1 200".len()]
        .parse()
        .unwrap();
    (status, text)
}

/// Over the wire: only a real connection carries header names as the client spelled them.
#[tokio::test]
async fn header_names_are_case_insensitive() {
    let f = Fixture::new(|b| b.header("X-API-Key"));
    let (key, _) = f.key().await;
    let server = TestServer::start(f.app.clone()).await;
    for name in ["x-api-key", "X-API-KEY", "X-Api-Key", "x-ApI-kEy"] {
        let (status, text) = raw_get(server.addr, &format!("{name}: {key}\r\n")).await;
        assert_eq!(status, 200, "{name}: {text}");
        assert!(text.contains(r#""id":"p""#), "{text}");
    }
    // Two spellings of one name are the same header given twice.
    let (status, text) = raw_get(
        server.addr,
        &format!("X-API-KEY: {key}\r\nx-api-key: {key}\r\n"),
    )
    .await;
    assert_eq!(status, 401, "{text}");
    assert!(text.contains("malformed_credentials"), "{text}");

    // A client that sends Title-Case names.
    let client = reqwest::Client::builder()
        .no_proxy()
        .http1_title_case_headers()
        .build()
        .unwrap();
    let response = client
        .get(server.url("/whoami"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    Reply::from_reqwest(response).await.assert_ok();
}

#[tokio::test]
async fn custom_header_name_replaces_x_api_key() {
    let f = Fixture::new(|b| b.header("X-Coordinator-Key"));
    let (key, _) = f.key().await;
    f.send(get("/whoami").header("x-coordinator-key", &key))
        .await
        .assert_ok();

    // The default header is no longer read.
    let reply = f.get_with_key("/whoami", &key).await;
    reply.assert_refusal(401, "missing_credentials");
    assert_eq!(reply.headers[WWW_AUTHENTICATE], r#"ApiKey realm="api""#);
    let request = get("/whoami")
        .header("x-api-key", &key)
        .header("X-Coordinator-Key", &key);
    f.send(request).await.assert_ok();
}

#[tokio::test]
async fn bearer_source_admits_a_valid_key() {
    let f = Fixture::new(|b| b.bearer());
    let (key, _) = f.key().await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let request = get("/whoami").header("authorization", format!("{scheme} {key}"));
        let reply = f.send(request).await;
        let body = reply.assert_ok();
        assert!(body.contains(r#""id":"p""#), "{body}");
    }
    // The X-API-Key header keeps working next to it.
    f.get_with_key("/whoami", &key).await.assert_ok();
    let reply = f.send(get("/whoami")).await;
    reply.assert_refusal(401, "missing_credentials");
    assert_eq!(reply.headers[WWW_AUTHENTICATE], r#"Bearer realm="api""#);
}

#[tokio::test]
async fn query_parameter_source_admits_a_valid_key() {
    let f = Fixture::new(|b| b.query("token"));
    let (key, _) = f.key().await;
    for path in [
        format!("/whoami?token={key}"),
        format!("/whoami?job=7&token={key}&page=2"),
    ] {
        let reply = f.send(get(&path)).await;
        let body = reply.assert_ok();
        assert!(body.contains(r#""id":"p""#), "{body}");
    }
    // Another parameter name is not the credential.
    f.send(get(&format!("/whoami?key={key}")))
        .await
        .assert_refusal(401, "missing_credentials");
}

#[tokio::test]
async fn websocket_protocol_source_admits_a_valid_key() {
    let f = Fixture::new(|b| b.websocket_protocol());
    let (key, _) = f.key().await;
    for value in [
        format!("keygate.key.{key}"),
        format!("json, keygate.key.{key}"),
        format!("keygate.key.{key}, graphql-ws"),
    ] {
        let reply = f
            .send(get("/whoami").header("sec-websocket-protocol", value))
            .await;
        let body = reply.assert_ok();
        assert!(body.contains(r#""id":"p""#), "{body}");
    }
    // Protocols that carry no key are not a credential.
    f.send(get("/whoami").header("sec-websocket-protocol", "json, graphql-ws"))
        .await
        .assert_refusal(401, "missing_credentials");
}
