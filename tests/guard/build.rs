//! Build-time errors: a guard that cannot work is never built.

use keygate::{
    ApiKey, ApiKeyGuard, BuildError, InMemoryRegistry, KeyError, KeyGrant,
    limit::FailedAttemptLimiter,
};

use crate::opaque_key;

#[test]
fn build_without_a_key_source_fails() {
    let error = ApiKeyGuard::builder().build().unwrap_err();
    assert!(matches!(error, BuildError::NoKeySource), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("openssl rand -base64 32"), "{message}");

    // Sources and a public path are no substitute for a key.
    let error = ApiKeyGuard::builder()
        .bearer()
        .public_path("/health")
        .build()
        .unwrap_err();
    assert!(matches!(error, BuildError::NoKeySource), "{error:?}");
}

#[test]
fn opaque_key_shorter_than_32_characters_is_refused() {
    let error = ApiKey::new("x".repeat(31)).unwrap_err();
    assert!(
        matches!(error, KeyError::TooShort { len: 31, min: 32 }),
        "{error:?}"
    );
    assert!(ApiKey::new("x".repeat(32)).is_ok());
    assert!(ApiKey::new("").is_err());

    // The same check for a value read from the environment, and it stops the build.
    let error = ApiKey::from_var("COORDINATOR_API_KEY", Some("too-short\n".into())).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("COORDINATOR_API_KEY"), "{message}");
    assert!(message.contains("openssl rand -base64 32"), "{message}");
    assert!(!message.contains("too-short"), "{message}");
    let error = BuildError::from(error);
    assert!(matches!(error, BuildError::Key(_)), "{error:?}");
}

#[test]
fn invalid_header_name_fails_to_build() {
    for name in ["X API Key", "", "x-api-key:", "ключ"] {
        let error = ApiKeyGuard::builder()
            .key(ApiKey::new(opaque_key()).unwrap(), KeyGrant::new("p"))
            .header(name)
            .build()
            .unwrap_err();
        assert!(
            matches!(&error, BuildError::InvalidHeaderName(n) if n == name),
            "{error:?}"
        );
        assert!(error.to_string().contains(name), "{error}");
    }
}

#[test]
fn key_from_an_unset_env_var_fails_naming_the_variable() {
    const VAR: &str = "KEYGATE_GUARD_TEST_SURELY_UNSET_API_KEY";
    assert!(std::env::var_os(VAR).is_none());
    let error = ApiKeyGuard::builder()
        .key_from_env(VAR, KeyGrant::new("coordinator"))
        .build()
        .unwrap_err();
    assert!(
        matches!(&error, BuildError::Key(KeyError::MissingEnv { var }) if var == VAR),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(VAR), "{message}");
    assert!(message.contains("openssl rand -base64 32"), "{message}");
}

#[test]
fn errors_returned_from_main_print_their_message_not_their_fields() {
    // `main() -> Result<(), Box<dyn Error>>` prints `Error: {error:?}`: the quick start's
    // `ApiKey::from_env(..)?` and `.build()?` must show the helpful text there.
    const VAR: &str = "KEYGATE_GUARD_TEST_SURELY_UNSET_MAIN_KEY";
    assert!(std::env::var_os(VAR).is_none());
    let from_env: Box<dyn std::error::Error> = ApiKey::from_env(VAR).unwrap_err().into();
    let build: Box<dyn std::error::Error> = ApiKeyGuard::builder()
        .key_from_env(VAR, KeyGrant::new("coordinator"))
        .build()
        .unwrap_err()
        .into();
    let no_key: Box<dyn std::error::Error> = ApiKeyGuard::builder().build().unwrap_err().into();
    let short: Box<dyn std::error::Error> = ApiKey::new("short").unwrap_err().into();
    for (error, says) in [
        (&from_env, VAR),
        (&build, VAR),
        (&no_key, "no API key or key registry configured"),
        (&short, "at least 32"),
    ] {
        let shown = format!("{error:?}");
        assert_eq!(shown, error.to_string());
        assert!(shown.contains(says), "{shown}");
        assert!(
            !shown.contains(" {") && !shown.contains("MissingEnv"),
            "{shown}"
        );
    }
    assert!(format!("{from_env:?}").contains("openssl rand -base64 32"));
}

#[test]
fn other_misconfigurations_fail_to_build() {
    let key = || ApiKey::new(opaque_key()).unwrap();
    let error = ApiKeyGuard::builder()
        .key(key(), KeyGrant::new("p"))
        .sources([])
        .build()
        .unwrap_err();
    assert!(matches!(error, BuildError::NoCredentialSource), "{error:?}");

    let error = ApiKeyGuard::builder()
        .key(key(), KeyGrant::new("p"))
        .public_path("health")
        .build()
        .unwrap_err();
    assert!(
        matches!(error, BuildError::InvalidPublicPath(_)),
        "{error:?}"
    );

    let error = ApiKeyGuard::builder()
        .key(key(), KeyGrant::new("p"))
        .registry(InMemoryRegistry::new())
        .build()
        .unwrap_err();
    assert!(matches!(error, BuildError::KeysAndRegistry), "{error:?}");

    let same = key();
    let error = ApiKeyGuard::builder()
        .key(same.clone(), KeyGrant::new("p"))
        .key(same, KeyGrant::new("q"))
        .build()
        .unwrap_err();
    assert!(matches!(error, BuildError::DuplicateKey), "{error:?}");
}

#[test]
fn a_failed_attempt_limiter_that_cannot_find_clients_fails_to_build() {
    let builder = || {
        ApiKeyGuard::builder()
            .key(ApiKey::new(opaque_key()).unwrap(), KeyGrant::new("p"))
            .failed_attempts(FailedAttemptLimiter::default())
    };
    let error = builder().build().unwrap_err();
    assert!(matches!(error, BuildError::NoClientAddress), "{error:?}");
    // The message says what to write, the axum line included.
    let shown = error.to_string();
    for hint in [
        ".client_ip(",
        "ConnectInfo<SocketAddr>",
        ".client_ip_from_extensions()",
    ] {
        assert!(shown.contains(hint), "{hint} in: {shown}");
    }

    builder().client_ip_from_extensions().build().unwrap();
    builder().client_ip(|_| None).build().unwrap();
}
