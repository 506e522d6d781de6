//! `X-Forwarded-For` parsing behind trusted proxies (by count and by network), on
//! arbitrary header values: never a panic, and the client is always the peer or an
//! address from the header.
#![no_main]

use std::{
    net::{IpAddr, SocketAddr},
    sync::OnceLock,
};

use http::{HeaderValue, Request};
use keygate::{ApiKey, ApiKeyGuard, ClientAddr, KeyGrant};
use libfuzzer_sys::fuzz_target;

fn guards() -> &'static [ApiKeyGuard; 2] {
    static GUARDS: OnceLock<[ApiKeyGuard; 2]> = OnceLock::new();
    GUARDS.get_or_init(|| {
        let builder = || {
            ApiKeyGuard::builder().key(
                ApiKey::new("a-fuzzing-key-of-at-least-32-characters").unwrap(),
                KeyGrant::new("fuzzer"),
            )
        };
        [
            builder().trusted_proxies(2).build().unwrap(),
            builder()
                .trusted_proxy_networks(["10.0.0.0/8", "2001:db8::/32", "192.0.2.1"])
                .build()
                .unwrap(),
        ]
    })
}

fuzz_target!(|data: &[u8]| {
    let peer: IpAddr = [10, 1, 2, 3].into();
    let mut request = Request::get("/").body(()).unwrap();
    request.extensions_mut().insert(ClientAddr(peer));
    for value in data.split(|&b| b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            request.headers_mut().append("x-forwarded-for", value);
        }
    }
    // Every address written in the header, however it was spelled.
    let written: Vec<IpAddr> = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter_map(|entry| {
            let entry = std::str::from_utf8(entry.trim_ascii()).ok()?;
            entry
                .parse::<IpAddr>()
                .or_else(|_| entry.parse::<SocketAddr>().map(|socket| socket.ip()))
                .ok()
        })
        .collect();
    for guard in guards() {
        let client = guard.client_ip(&request).unwrap();
        assert!(
            client == peer || written.contains(&client),
            "{client} is neither the peer nor written in the header"
        );
    }
});
