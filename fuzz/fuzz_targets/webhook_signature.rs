//! The webhook signature header and verifier on arbitrary input: never a panic; a
//! header that verifies is one made with the secret.
#![no_main]

use std::{
    sync::OnceLock,
    time::{Duration, UNIX_EPOCH},
};

use http::HeaderValue;
use keygate::webhook::{WebhookSecret, WebhookVerifier, sign};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"a-fuzzing-webhook-secret-of-32-bytes!";
const NOW: u64 = 1_800_000_000;

fn verifier() -> &'static WebhookVerifier {
    static VERIFIER: OnceLock<WebhookVerifier> = OnceLock::new();
    VERIFIER
        .get_or_init(|| WebhookVerifier::new([WebhookSecret::from_bytes(SECRET).unwrap()]).unwrap())
}

fuzz_target!(|data: &[u8]| {
    // The first line is the header, the rest the body.
    let split = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let (header, body) = (&data[..split], data.get(split + 1..).unwrap_or_default());
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    if let Ok(header) = HeaderValue::from_bytes(header) {
        let _ = verifier().verify_at(Some(&header), body, now);
    }
    // A header signed with the secret always verifies, whatever the body.
    let secret = WebhookSecret::from_bytes(SECRET).unwrap();
    let signed = HeaderValue::try_from(sign(&secret, NOW, body)).unwrap();
    verifier().verify_at(Some(&signed), body, now).unwrap();
});
