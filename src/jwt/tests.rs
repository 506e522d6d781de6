//! One test per check of the verifier, with tokens made by the issuer or by hand.

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::*;
use crate::{CredentialKind, Malformed, Rejection};

const SECRET: &str = "a-secret-of-at-least-32-bytes-for-hs256!";
const ED_PRIVATE: &[u8] = include_bytes!("testdata/ed25519.pem");
const ED_PUBLIC: &[u8] = include_bytes!("testdata/ed25519.pub.pem");
const EC_PRIVATE: &[u8] = include_bytes!("testdata/p256.pem");
const EC_PUBLIC: &[u8] = include_bytes!("testdata/p256.pub.pem");
const RSA_PRIVATE: &[u8] = include_bytes!("testdata/rsa.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("testdata/rsa.pub.pem");

fn secret() -> HmacSecret {
    HmacSecret::new(SECRET).unwrap()
}

fn hs_issuer() -> JwtIssuer {
    JwtIssuer::hs256(&secret())
}

fn hs_verifier() -> JwtVerifier {
    JwtVerifier::hs256(&secret()).build()
}

fn access(issuer: &JwtIssuer) -> String {
    issuer
        .access("user-1", Map::new())
        .unwrap()
        .expose_secret()
        .to_owned()
}

/// A token signed with `key` under `header`, with exactly `claims`.
fn signed(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).unwrap()
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn valid_claims() -> Value {
    json!({"sub": "user-1", "token_type": "access", "exp": now() + 600, "jti": "t-1"})
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[test]
fn a_valid_access_token_makes_a_token_principal() {
    let issued = hs_issuer()
        .access(
            "user-1",
            json!({"scope": "packs:read", "workspaces": ["ws-a"]})
                .as_object()
                .unwrap()
                .clone(),
        )
        .unwrap();
    let principal = hs_verifier().verify(issued.expose_secret()).unwrap();
    assert_eq!(principal.id(), "user-1");
    assert_eq!(principal.credential_kind(), CredentialKind::Jwt);
    assert_eq!(principal.token_id(), Some(issued.token_id.as_str()));
    assert_eq!(principal.key_id(), None);
    assert_eq!(principal.scopes(), ["packs:read"]);
    assert_eq!(principal.workspaces(), ["ws-a"]);
    assert_eq!(principal.tier(), "default");
    // `exp`, for a live session to end at.
    let expires_at = principal.token().unwrap().expires_at.unwrap();
    let lifetime = expires_at - time::OffsetDateTime::now_utc();
    let ttl = hs_issuer().access_lifetime();
    assert!(
        lifetime <= ttl && lifetime > ttl - Duration::from_secs(60),
        "{lifetime}"
    );
}

#[test]
fn expired() {
    let issuer = hs_issuer().access_ttl(Duration::from_secs(60));
    let long_ago = OffsetDateTime::now_utc() - time::Duration::minutes(5);
    let token = issuer
        .issue_at(TokenKind::Access, "user-1", Map::new(), long_ago)
        .unwrap();
    assert_eq!(
        hs_verifier().verify(token.expose_secret()).unwrap_err(),
        Rejection::ExpiredCredentials
    );
    // Within the leeway (30 s by default): still admitted.
    let just_expired = OffsetDateTime::now_utc() - time::Duration::seconds(70);
    let token = issuer
        .issue_at(TokenKind::Access, "user-1", Map::new(), just_expired)
        .unwrap();
    assert!(hs_verifier().verify(token.expose_secret()).is_ok());
}

#[test]
fn not_yet_valid() {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    let mut claims = valid_claims();
    claims["nbf"] = json!(now() + 300);
    let token = signed(&Header::default(), &claims, &key);
    assert_eq!(
        hs_verifier().verify(&token).unwrap_err(),
        Rejection::InvalidCredentials
    );
    // Within the leeway: admitted.
    claims["nbf"] = json!(now() + 10);
    let token = signed(&Header::default(), &claims, &key);
    assert!(hs_verifier().verify(&token).is_ok());
}

#[test]
fn wrong_signature() {
    let other = HmacSecret::new("another-secret-of-at-least-32-bytes!!!").unwrap();
    let token = access(&JwtIssuer::hs256(&other));
    assert_eq!(
        hs_verifier().verify(&token).unwrap_err(),
        Rejection::InvalidCredentials
    );
    // A signature changed by one character.
    let mut token = access(&hs_issuer());
    let last = token.pop().unwrap();
    token.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        hs_verifier().verify(&token).unwrap_err(),
        Rejection::InvalidCredentials
    );
}

#[test]
fn wrong_key_id() {
    let keys = JwtKeySet::new([VerifyingKey::hmac(Algorithm::HS256, &secret())
        .unwrap()
        .with_kid("k1")]);
    let verifier = JwtVerifier::builder(keys).build();
    assert!(verifier.verify(&access(&hs_issuer().key_id("k1"))).is_ok());
    // Without a kid, the one HS256 key is used.
    assert!(verifier.verify(&access(&hs_issuer())).is_ok());
    assert_eq!(
        verifier
            .verify(&access(&hs_issuer().key_id("k2")))
            .unwrap_err(),
        Rejection::InvalidCredentials
    );
}

#[test]
fn unknown_algorithm_and_alg_none() {
    let payload = b64(&valid_claims().to_string());
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"HS999"}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        for signature in ["", "c2ln"] {
            let token = format!("{}.{payload}.{signature}", b64(header));
            assert_eq!(
                hs_verifier().verify(&token).unwrap_err(),
                Rejection::InvalidCredentials,
                "{header} {signature:?}"
            );
        }
    }
}

#[test]
fn hs_rs_confusion() {
    // The attacker signs HS256 with the server's RSA *public* key as the HMAC secret.
    let verifier = JwtVerifier::builder(JwtKeySet::new([VerifyingKey::rsa_pem(
        Algorithm::RS256,
        RSA_PUBLIC,
    )
    .unwrap()
    .with_kid("rsa")]))
    .build();
    let forged_key = EncodingKey::from_secret(RSA_PUBLIC);
    for kid in [None, Some("rsa")] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        let token = signed(&header, &valid_claims(), &forged_key);
        assert_eq!(
            verifier.verify(&token).unwrap_err(),
            Rejection::InvalidCredentials,
            "{kid:?}"
        );
    }
    // The genuine RS256 token verifies.
    let issuer =
        JwtIssuer::new(SigningKey::rsa_pem(Algorithm::RS256, RSA_PRIVATE).unwrap()).key_id("rsa");
    assert!(verifier.verify(&access(&issuer)).is_ok());
}

#[test]
fn refresh_as_access() {
    let refresh = hs_issuer().refresh("user-1", Map::new()).unwrap();
    assert_eq!(
        hs_verifier().verify(refresh.expose_secret()).unwrap_err(),
        Rejection::InvalidCredentials
    );
}

#[test]
fn missing_claims() {
    let key = EncodingKey::from_secret(SECRET.as_bytes());
    for missing in ["exp", "sub", "token_type"] {
        let mut claims = valid_claims();
        claims.as_object_mut().unwrap().remove(missing);
        let token = signed(&Header::default(), &claims, &key);
        assert_eq!(
            hs_verifier().verify(&token).unwrap_err(),
            Rejection::InvalidCredentials,
            "{missing}"
        );
    }
}

#[test]
fn issuer_and_audience() {
    let verifier = JwtVerifier::hs256(&secret())
        .issuer("auth")
        .audience("packs")
        .build();
    let good = hs_issuer().issuer("auth").audience("packs");
    assert!(verifier.verify(&access(&good)).is_ok());
    for bad in [
        hs_issuer().issuer("evil").audience("packs"),
        hs_issuer().issuer("auth").audience("other"),
        hs_issuer().audience("packs"),
        hs_issuer().issuer("auth"),
    ] {
        assert_eq!(
            verifier.verify(&access(&bad)).unwrap_err(),
            Rejection::InvalidCredentials
        );
    }
    // Without a configured audience, a token's `aud` is not held against it.
    assert!(hs_verifier().verify(&access(&good)).is_ok());
}

#[test]
fn oversize_token() {
    let verifier = JwtVerifier::hs256(&secret()).max_token_len(100).build();
    let token = access(&hs_issuer());
    assert!(token.len() > 100);
    assert_eq!(
        verifier.verify(&token).unwrap_err(),
        Rejection::MalformedCredentials(Malformed::TooLong)
    );
    assert!(hs_verifier().verify(&token).is_ok());
}

#[test]
fn undecodable_tokens_are_invalid() {
    for token in ["a.b.c", "eyJ.eyJ.eyJ", "not-a-jwt", "", "...."] {
        assert_eq!(
            hs_verifier().verify(token).unwrap_err(),
            Rejection::InvalidCredentials,
            "{token}"
        );
    }
}

#[test]
fn es256_and_eddsa_from_pem() {
    let keys = JwtKeySet::new([
        VerifyingKey::es256_pem(EC_PUBLIC).unwrap().with_kid("ec"),
        VerifyingKey::ed25519_pem(ED_PUBLIC).unwrap().with_kid("ed"),
    ]);
    let verifier = JwtVerifier::builder(keys).build();
    let ec = JwtIssuer::new(SigningKey::es256_pem(EC_PRIVATE).unwrap()).key_id("ec");
    let ed = JwtIssuer::new(SigningKey::ed25519_pem(ED_PRIVATE).unwrap()).key_id("ed");
    assert!(verifier.verify(&access(&ec)).is_ok());
    assert!(verifier.verify(&access(&ed)).is_ok());
    // Each key only with its own algorithm: an EdDSA token naming the EC key's kid.
    let mislabelled = JwtIssuer::new(SigningKey::ed25519_pem(ED_PRIVATE).unwrap()).key_id("ec");
    assert_eq!(
        verifier.verify(&access(&mislabelled)).unwrap_err(),
        Rejection::InvalidCredentials
    );
}

#[test]
fn a_jwks_selects_by_kid_and_is_replaced_at_run_time() {
    // The public Ed25519 key of testdata/ed25519.pem as a JWK.
    let x = {
        let der = ED_PUBLIC
            .split(|&b| b == b'\n')
            .filter(|line| !line.starts_with(b"-----"))
            .flatten()
            .copied()
            .collect::<Vec<u8>>();
        let der = base64::engine::general_purpose::STANDARD
            .decode(der)
            .unwrap();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der[der.len() - 32..])
    };
    let jwks: JwkSet = serde_json::from_value(json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "x": x},
    ]}))
    .unwrap();
    let keys = JwtKeySet::from_jwks(&jwks).unwrap();
    let verifier = JwtVerifier::builder(keys.clone()).build();
    let ed = JwtIssuer::new(SigningKey::ed25519_pem(ED_PRIVATE).unwrap());
    assert!(verifier.verify(&access(&ed.clone().key_id("ed-1"))).is_ok());
    assert_eq!(
        verifier
            .verify(&access(&ed.clone().key_id("ed-2")))
            .unwrap_err(),
        Rejection::InvalidCredentials
    );

    // Rotation: the same key under a new kid; the old kid stops working at once.
    let rotated: JwkSet = serde_json::from_value(json!({"keys": [
        {"kty": "OKP", "crv": "Ed25519", "kid": "ed-2", "alg": "EdDSA", "x": x},
    ]}))
    .unwrap();
    keys.replace_jwks(&rotated).unwrap();
    assert!(verifier.verify(&access(&ed.clone().key_id("ed-2"))).is_ok());
    assert_eq!(
        verifier.verify(&access(&ed.key_id("ed-1"))).unwrap_err(),
        Rejection::InvalidCredentials
    );

    // An unusable set changes nothing.
    let unusable: JwkSet = serde_json::from_value(json!({"keys": [
        {"kty": "oct", "kid": "x", "k": "c2VjcmV0"},
    ]}))
    .unwrap();
    assert!(matches!(
        keys.replace_jwks(&unusable),
        Err(JwtError::UnusableJwk { .. })
    ));
    assert_eq!(keys.kids(), [Some("ed-2".to_owned())]);
}

#[test]
fn concurrent_rotation_never_shows_a_torn_set() {
    let a = VerifyingKey::hmac(Algorithm::HS256, &secret())
        .unwrap()
        .with_kid("a");
    let keys = JwtKeySet::new([a.clone()]);
    let verifier = JwtVerifier::builder(keys.clone()).build();
    let token = access(&hs_issuer().key_id("a"));
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..2_000 {
                keys.replace([a.clone()]);
            }
        });
        for _ in 0..2_000 {
            assert!(verifier.verify(&token).is_ok());
        }
    });
}

#[test]
fn secrets_are_checked_and_never_shown() {
    assert!(matches!(
        HmacSecret::new([0u8; 31]),
        Err(JwtError::SecretTooShort { len: 31, min: 32 })
    ));
    let error = HmacSecret::from_var("JWT_SECRET", Some("  short  ".into())).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("JWT_SECRET"), "{text}");
    assert!(!text.contains("short "), "{text}");
    assert!(matches!(
        HmacSecret::from_var("JWT_SECRET", None),
        Err(JwtError::MissingEnv { var }) if var == "JWT_SECRET"
    ));
    let issued = hs_issuer().access("user-1", Map::new()).unwrap();
    let shown = format!("{issued:?} {:?} {:?}", secret(), hs_verifier());
    assert!(!shown.contains(issued.expose_secret()), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
}

#[test]
fn issued_tokens_carry_the_claims() {
    let issuer = hs_issuer().issuer("auth").audience("packs");
    let mut extra = Map::new();
    extra.insert("sub".into(), "forged".into());
    extra.insert("plan".into(), "gold".into());
    let issued = issuer.refresh("user-1", extra).unwrap();
    let payload = issued.expose_secret().split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "user-1");
    assert_eq!(claims["plan"], "gold");
    assert_eq!(claims["token_type"], "refresh");
    assert_eq!(claims["jti"], issued.token_id.as_str());
    assert_eq!(claims["iss"], "auth");
    assert_eq!(claims["aud"], "packs");
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        7 * 24 * 3600
    );
    assert_eq!(issued.kind, TokenKind::Refresh);
}
