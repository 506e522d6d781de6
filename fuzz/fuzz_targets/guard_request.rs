//! A request of arbitrary headers and target through the whole guard (every credential
//! source on): never a panic, never a 5xx; only an admitted request reaches the service.
#![no_main]

use std::{
    convert::Infallible,
    future::Future,
    pin::pin,
    sync::OnceLock,
    task::{Context, Poll, Waker},
};

use http::{HeaderName, HeaderValue, Request, Response};
use keygate::{ApiKey, ApiKeyGuard, KeyGrant, Principal};
use libfuzzer_sys::fuzz_target;
use tower::{Layer, Service, service_fn};

fn guard() -> &'static ApiKeyGuard {
    static GUARD: OnceLock<ApiKeyGuard> = OnceLock::new();
    GUARD.get_or_init(|| {
        ApiKeyGuard::builder()
            .key(
                ApiKey::new("a-fuzzing-key-of-at-least-32-characters").unwrap(),
                KeyGrant::new("fuzzer"),
            )
            .bearer()
            .query("token")
            .websocket_protocol()
            .public_path("/health")
            .build()
            .unwrap()
    })
}

fuzz_target!(|data: &[u8]| {
    // The first line is the request target; each following line `name: value` a header.
    let mut lines = data.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or_default();
    let Ok(uri) = http::Uri::try_from(target) else {
        return;
    };
    let mut request = Request::get(uri).body(()).unwrap();
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        request.headers_mut().append(name, value);
    }
    let inner = service_fn(|request: Request<()>| async move {
        // Only an admitted request (or a public one) gets here.
        let public = request.uri().path() == "/health";
        assert!(public || request.extensions().get::<Principal>().is_some());
        Ok::<_, Infallible>(Response::new(String::new()))
    });
    let mut service = guard().layer(inner);
    let mut call = pin!(service.call(request));
    // In-memory backends decide at once: the first poll is the answer.
    let Poll::Ready(response) = call.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
        panic!("an in-memory guard did not decide on its first poll");
    };
    let status = response.unwrap().status();
    assert!(!status.is_server_error(), "{status}");
});
