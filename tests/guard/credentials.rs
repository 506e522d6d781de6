//! The refusal rows of DESIGN.md about credentials, one test per case of a row, each named
//! after its row: every one is a 401 with the contract's body and `WWW-Authenticate`.

use http::{HeaderValue, header::WWW_AUTHENTICATE};
use keygate::{ApiKey, KeyError, KeyGrant, KeyRegistry};
use time::OffsetDateTime;

use crate::{
    Fixture, forge, get, minutes_ago, opaque_key, secret_part, tampered, unregistered_key,
};

// ---- no credential: 401 missing_credentials ----

#[tokio::test]
async fn no_credential_is_401_missing_credentials_with_www_authenticate() {
    let f = Fixture::new(|b| b);
    let reply = f.send(get("/whoami")).await;
    reply.assert_refusal(401, "missing_credentials");
    assert_eq!(reply.headers[WWW_AUTHENTICATE], r#"ApiKey realm="api""#);

    // Sources that are not configured are not read: they do not count as a credential.
    let (key, _) = f.key().await;
    for request in [
        get("/whoami").header("authorization", format!("Bearer {key}")),
        get(&format!("/whoami?token={key}")),
        get("/whoami").header("sec-websocket-protocol", format!("keygate.key.{key}")),
    ] {
        f.send(request)
            .await
            .assert_refusal(401, "missing_credentials");
    }
    assert_eq!(f.registry.lookups(), 0);
}

// ---- empty, too long, bad bytes, duplicated: 401 malformed_credentials ----

#[tokio::test]
async fn empty_credential_is_401_malformed_credentials() {
    let f = Fixture::new(|b| b.bearer().query("token").websocket_protocol());
    for request in [
        get("/whoami").header("x-api-key", ""),
        get("/whoami").header("x-api-key", "   "),
        get("/whoami").header("authorization", "Bearer "),
        get("/whoami").header("authorization", "Bearer"),
        get("/whoami?token="),
        get("/whoami").header("sec-websocket-protocol", "json, keygate.key."),
    ] {
        f.send(request)
            .await
            .assert_refusal(401, "malformed_credentials");
    }
    assert_eq!(f.registry.lookups(), 0);
}

#[tokio::test]
async fn too_long_credential_is_401_malformed_credentials() {
    let f = Fixture::new(|b| b);
    for len in [513, 4096] {
        f.get_with_key("/whoami", &"a".repeat(len))
            .await
            .assert_refusal(401, "malformed_credentials");
    }
    assert_eq!(f.registry.lookups(), 0);

    // 512 bytes is within the default cap: looked up, and unknown.
    f.get_with_key("/whoami", &"a".repeat(512))
        .await
        .assert_refusal(401, "invalid_credentials");
    assert_eq!(f.registry.lookups_by_digest(), 1);
}

#[tokio::test]
async fn too_long_credential_is_401_malformed_credentials_under_a_custom_cap() {
    // Lowered to exactly the length of a generated key.
    let f = Fixture::new(|b| b.max_credential_len(54));
    let (key, _) = f.key().await;
    assert_eq!(key.len(), 54);
    f.get_with_key("/whoami", &key).await.assert_ok();
    f.get_with_key("/whoami", &format!("{key}x"))
        .await
        .assert_refusal(401, "malformed_credentials");
    f.get_with_key("/whoami", &"b".repeat(55))
        .await
        .assert_refusal(401, "malformed_credentials");
    assert_eq!(f.registry.lookups(), 1);

    // Raised above the default: a 600-character opaque key now works.
    let f = Fixture::new(|b| b.max_credential_len(1024));
    let long = "k".repeat(600);
    f.registry
        .inner
        .insert_key(&ApiKey::new(long.clone()).unwrap(), KeyGrant::new("long"))
        .unwrap();
    let reply = f.get_with_key("/whoami", &long).await;
    let body = reply.assert_ok();
    assert!(body.contains(r#""id":"long""#), "{body}");
    f.get_with_key("/whoami", &"k".repeat(1025))
        .await
        .assert_refusal(401, "malformed_credentials");
}

#[tokio::test]
async fn credential_with_bad_bytes_is_401_malformed_credentials() {
    let f = Fixture::new(|b| b.query("token"));
    let (key, _) = f.key().await;
    let raw: [&[u8]; 4] = [
        // UTF-8 "é", sent as raw bytes.
        b"caf\xc3\xa9-0123456789abcdef0123456789abcdef",
        // Latin-1 bytes that are not UTF-8 at all.
        b"\xff\xfe0123456789abcdef0123456789abcdef",
        b"0123456789abcdef 0123456789abcdef",
        b"0123456789abcdef\t0123456789abcdef",
    ];
    for bytes in raw {
        let request = get("/whoami").header("x-api-key", HeaderValue::from_bytes(bytes).unwrap());
        f.send(request)
            .await
            .assert_refusal(401, "malformed_credentials");
    }
    // A valid key with a non-ASCII byte appended is not "nearly valid".
    let mut bytes = key.as_bytes().to_vec();
    bytes.push(0xe9);
    let request = get("/whoami").header("x-api-key", HeaderValue::from_bytes(&bytes).unwrap());
    f.send(request)
        .await
        .assert_refusal(401, "malformed_credentials");

    // The query parameter is percent-decoded before the check.
    for query in ["caf%C3%A9%20and%20more", "a%00b", "a%20b", "a+b"] {
        f.send(get(&format!("/whoami?token={query}")))
            .await
            .assert_refusal(401, "malformed_credentials");
    }
    assert_eq!(f.registry.lookups(), 0);
}

#[tokio::test]
async fn duplicated_credential_is_401_malformed_credentials() {
    let f = Fixture::new(|b| b.bearer().query("token").websocket_protocol());
    // Refused even when both copies are the same valid key.
    let (key, _) = f.key().await;
    for request in [
        get("/whoami")
            .header("x-api-key", &key)
            .header("X-API-Key", &key),
        get("/whoami")
            .header("authorization", format!("Bearer {key}"))
            .header("authorization", format!("Bearer {key}")),
        get(&format!("/whoami?token={key}&token={key}")),
        get("/whoami").header(
            "sec-websocket-protocol",
            format!("keygate.key.{key}, keygate.key.{key}"),
        ),
        get("/whoami")
            .header("sec-websocket-protocol", format!("keygate.key.{key}"))
            .header("sec-websocket-protocol", format!("keygate.key.{key}")),
    ] {
        f.send(request)
            .await
            .assert_refusal(401, "malformed_credentials");
    }
    assert_eq!(f.registry.lookups(), 0);
}

#[tokio::test]
async fn credentials_in_two_sources_are_401_malformed_credentials() {
    let f = Fixture::new(|b| b.bearer().query("token").websocket_protocol());
    let (key, _) = f.key().await;
    let (other, _) = f.key().await;
    for (first, second) in [(&key, &key), (&key, &other)] {
        for request in [
            get("/whoami")
                .header("x-api-key", first)
                .header("authorization", format!("Bearer {second}")),
            get(&format!("/whoami?token={second}")).header("x-api-key", first),
            get("/whoami")
                .header("authorization", format!("Bearer {first}"))
                .header("sec-websocket-protocol", format!("keygate.key.{second}")),
        ] {
            f.send(request)
                .await
                .assert_refusal(401, "malformed_credentials");
        }
    }
    assert_eq!(f.registry.lookups(), 0);
}

#[tokio::test]
async fn basic_authorization_is_401_malformed_credentials_when_bearer_is_enabled() {
    let f = Fixture::new(|b| b.bearer());
    let (key, _) = f.key().await;
    let basic = "Basic dXNlcjpwYXNzd29yZA==";
    let reply = f.send(get("/whoami").header("authorization", basic)).await;
    reply.assert_refusal(401, "malformed_credentials");
    assert_eq!(reply.headers[WWW_AUTHENTICATE], r#"Bearer realm="api""#);
    // Even next to a valid key in the X-API-Key header.
    let request = get("/whoami")
        .header("x-api-key", &key)
        .header("authorization", basic);
    f.send(request)
        .await
        .assert_refusal(401, "malformed_credentials");
    assert_eq!(f.registry.lookups(), 0);

    // Without the Bearer source, `Authorization` is not a credential: ignored.
    let f = Fixture::new(|b| b);
    let (key, _) = f.key().await;
    f.send(get("/whoami").header("authorization", basic))
        .await
        .assert_refusal(401, "missing_credentials");
    let request = get("/whoami")
        .header("x-api-key", &key)
        .header("authorization", basic);
    f.send(request).await.assert_ok();
}

// ---- unknown key, bad checksum: 401 invalid_credentials ----

#[tokio::test]
async fn unknown_key_is_401_invalid_credentials() {
    let f = Fixture::new(|b| b);
    let (known, known_id) = f.key().await;

    // An opaque key nobody registered: one lookup by digest.
    f.get_with_key("/whoami", &opaque_key())
        .await
        .assert_refusal(401, "invalid_credentials");
    assert_eq!(
        (f.registry.lookups_by_id(), f.registry.lookups_by_digest()),
        (0, 1)
    );

    // A well-formed generated key with a valid checksum that nobody registered: one
    // lookup by key id.
    f.get_with_key("/whoami", &unregistered_key())
        .await
        .assert_refusal(401, "invalid_credentials");
    assert_eq!(
        (f.registry.lookups_by_id(), f.registry.lookups_by_digest()),
        (1, 1)
    );

    // The key id of a real key with another secret and a correct checksum: found by id,
    // refused by the digest comparison.
    assert_eq!(forge(&known_id, secret_part(&known)), known, "forge works");
    let forged = forge(&known_id, &"Z".repeat(32));
    assert!(ApiKey::new(forged.clone()).is_ok(), "checksum is valid");
    f.get_with_key("/whoami", &forged)
        .await
        .assert_refusal(401, "invalid_credentials");
    assert_eq!(f.registry.lookups_by_id(), 2);

    // Too short to be any key: refused without a lookup.
    f.get_with_key("/whoami", "short-key")
        .await
        .assert_refusal(401, "invalid_credentials");
    assert_eq!(f.registry.lookups(), 3);

    // The real key still works.
    f.get_with_key("/whoami", &known).await.assert_ok();
}

#[tokio::test]
async fn bad_checksum_is_401_invalid_credentials_without_a_registry_lookup() {
    let f = Fixture::new(|b| b);
    let (key, _) = f.key().await;
    let mut bad_checksum = key.clone();
    let last = bad_checksum.pop().unwrap();
    bad_checksum.push(if last == '0' { '1' } else { '0' });
    for garbage in [tampered(&key), bad_checksum] {
        assert!(matches!(
            ApiKey::new(garbage.clone()),
            Err(KeyError::BadChecksum)
        ));
        f.get_with_key("/whoami", &garbage)
            .await
            .assert_refusal(401, "invalid_credentials");
    }
    assert_eq!(
        f.registry.lookups(),
        0,
        "garbage never reaches the registry"
    );

    f.get_with_key("/whoami", &key).await.assert_ok();
    assert_eq!(f.registry.lookups(), 1);
}

// ---- expired key: 401 expired_credentials ----

#[tokio::test]
async fn expired_key_is_401_expired_credentials() {
    let f = Fixture::new(|b| b);
    let expired = f.issue(KeyGrant::new("p").expires_at(minutes_ago(1))).await;
    f.get_with_key("/whoami", expired.key.expose_secret())
        .await
        .assert_refusal(401, "expired_credentials");

    // A key that expires later works until then.
    let later = f
        .issue(KeyGrant::new("p").expires_at(minutes_ago(-60)))
        .await;
    f.get_with_key("/whoami", later.key.expose_secret())
        .await
        .assert_ok();

    // An opaque key that expired (looked up by digest).
    let opaque = ApiKey::new(opaque_key()).unwrap();
    f.registry
        .inner
        .insert_key(&opaque, KeyGrant::new("legacy").expires_at(minutes_ago(10)))
        .unwrap();
    f.get_with_key("/whoami", opaque.expose_secret())
        .await
        .assert_refusal(401, "expired_credentials");
}

// ---- revoked or disabled key: 401 revoked_credentials ----

#[tokio::test]
async fn revoked_key_is_401_revoked_credentials() {
    let f = Fixture::new(|b| b);
    let (key, key_id) = f.key().await;
    f.registry
        .revoke(&key_id, OffsetDateTime::now_utc())
        .await
        .unwrap();
    f.get_with_key("/whoami", &key)
        .await
        .assert_refusal(401, "revoked_credentials");

    // Revoked and expired: revocation wins.
    let both = f.issue(KeyGrant::new("p").expires_at(minutes_ago(5))).await;
    f.registry
        .revoke(&both.record.key_id, minutes_ago(1))
        .await
        .unwrap();
    f.get_with_key("/whoami", both.key.expose_secret())
        .await
        .assert_refusal(401, "revoked_credentials");
}
