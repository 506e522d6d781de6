//! What a refusal says: its reason, its message and its JSON body.
//!
//! Every refusal but `insufficient_scope` says the same thing each time, so its words and
//! its whole body are `&'static str`s put together at compile time by [`fixed!`]; only
//! the `insufficient_scope` body, which names the scope, is serialized when needed.

use super::{Malformed, Rejection};

/// The reason of [`Rejection::InsufficientScope`], the one refusal without a fixed body.
pub(super) const INSUFFICIENT_SCOPE: &str = "insufficient_scope";

/// The words of a refusal that never change.
#[derive(Clone, Copy, Debug)]
pub(super) struct Fixed {
    /// The machine-readable reason.
    pub(super) reason: &'static str,
    /// The sentence for humans.
    pub(super) message: &'static str,
    /// `{"error":{"code":<status>,"reason":"<reason>","message":"<message>"}}`.
    pub(super) json: &'static str,
}

/// What a refusal says: fixed words, or the scope an `insufficient_scope` names.
pub(super) enum Text<'a> {
    /// Everything but `insufficient_scope`.
    Fixed(Fixed),
    /// `insufficient_scope`, with the scope that was required.
    Scope(&'a str),
}

/// A [`Fixed`] from the status code, reason and message, as literals; the JSON body is
/// their concatenation. Fails to compile if the reason or message would need escaping in
/// JSON, so the body is always what `serde_json` would write.
macro_rules! fixed {
    ($code:literal, $reason:literal, $message:literal) => {
        const {
            assert!(
                needs_no_escape($reason) && needs_no_escape($message),
                "a fixed refusal body must need no JSON escaping"
            );
            Fixed {
                reason: $reason,
                message: $message,
                json: concat!(
                    "{\"error\":{\"code\":",
                    $code,
                    ",\"reason\":\"",
                    $reason,
                    "\",\"message\":\"",
                    $message,
                    "\"}}"
                ),
            }
        }
    };
}

/// Whether `text` goes into a JSON string as it is: no `"`, no `\`, no control character
/// (the characters `serde_json` escapes).
const fn needs_no_escape(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        if matches!(bytes[at], b'"' | b'\\' | 0x00..=0x1f) {
            return false;
        }
        at += 1;
    }
    true
}

impl Malformed {
    /// The words of `malformed_credentials` for this defect.
    fn fixed(self) -> Fixed {
        match self {
            Malformed::Empty => fixed!(401, "malformed_credentials", "the API key is empty"),
            Malformed::TooLong => fixed!(401, "malformed_credentials", "the API key is too long"),
            Malformed::InvalidBytes => fixed!(
                401,
                "malformed_credentials",
                "the API key contains characters outside visible ASCII"
            ),
            Malformed::Duplicated => fixed!(
                401,
                "malformed_credentials",
                "the API key was given more than once"
            ),
            Malformed::Ambiguous => fixed!(
                401,
                "malformed_credentials",
                "API keys were given in more than one place"
            ),
            Malformed::NotBearer => fixed!(
                401,
                "malformed_credentials",
                "the Authorization header is not of the form `Bearer <key>`"
            ),
            Malformed::BadEncoding => fixed!(
                401,
                "malformed_credentials",
                "the API key is not valid base64url (without padding)"
            ),
        }
    }
}

impl Rejection {
    /// What this refusal says. The codes here are those of [`Rejection::status`] (a test
    /// checks that they agree).
    pub(super) fn text(&self) -> Text<'_> {
        Text::Fixed(match self {
            Rejection::MissingCredentials => {
                fixed!(401, "missing_credentials", "no API key was presented")
            }
            Rejection::MalformedCredentials(why) => why.fixed(),
            Rejection::InvalidCredentials => {
                fixed!(401, "invalid_credentials", "the API key is not valid")
            }
            Rejection::ExpiredCredentials => {
                fixed!(401, "expired_credentials", "the API key has expired")
            }
            Rejection::RevokedCredentials => {
                fixed!(401, "revoked_credentials", "the API key has been revoked")
            }
            Rejection::InvalidSignature => fixed!(
                401,
                "invalid_signature",
                "the webhook signature is missing, malformed or wrong"
            ),
            Rejection::StaleSignature => fixed!(
                401,
                "stale_signature",
                "the webhook timestamp is outside the accepted tolerance"
            ),
            Rejection::InsufficientScope { scope } => return Text::Scope(scope),
            Rejection::WorkspaceForbidden => fixed!(
                403,
                "workspace_forbidden",
                "the API key may not use this workspace"
            ),
            Rejection::RateLimited(_) => fixed!(
                429,
                "rate_limited",
                "the rate limit for this API key is exhausted"
            ),
            Rejection::TooManyFailedAttempts { .. } => fixed!(
                429,
                "too_many_failed_attempts",
                "too many failed authentication attempts from this client"
            ),
            Rejection::AuthUnavailable { .. } => fixed!(
                503,
                "auth_unavailable",
                "authentication is temporarily unavailable"
            ),
        })
    }
}

/// The message of `insufficient_scope`.
pub(super) fn scope_message(scope: &str) -> String {
    format!("this action requires the scope `{scope}`")
}

/// The JSON body of `insufficient_scope`, with the scope escaped as JSON requires.
pub(super) fn scope_json(scope: &str) -> String {
    serialize(403, INSUFFICIENT_SCOPE, &scope_message(scope))
}

/// The JSON body of the contract, serialized by `serde_json`.
fn serialize(code: u16, reason: &str, message: &str) -> String {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        error: Error<'a>,
    }
    #[derive(serde::Serialize)]
    struct Error<'a> {
        code: u16,
        reason: &'a str,
        message: &'a str,
    }
    let body = Body {
        error: Error {
            code,
            reason,
            message,
        },
    };
    // Serializing plain strings and integers cannot fail.
    serde_json::to_string(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::limit::{Quota, RateLimitDecision};

    /// Every refusal with a fixed body, each kind once.
    fn every_fixed() -> Vec<Rejection> {
        let quota = Quota::per_minute(std::num::NonZeroU32::MIN);
        let mut every = vec![
            Rejection::MissingCredentials,
            Rejection::InvalidCredentials,
            Rejection::ExpiredCredentials,
            Rejection::RevokedCredentials,
            Rejection::InvalidSignature,
            Rejection::StaleSignature,
            Rejection::WorkspaceForbidden,
            Rejection::RateLimited(RateLimitDecision::refuse(
                &quota,
                0,
                Duration::from_secs(60),
                Duration::from_secs(60),
            )),
            Rejection::TooManyFailedAttempts {
                retry_after: Duration::from_secs(1),
            },
            Rejection::AuthUnavailable {
                retry_after: Duration::from_secs(1),
            },
        ];
        every.extend(
            [
                Malformed::Empty,
                Malformed::TooLong,
                Malformed::InvalidBytes,
                Malformed::Duplicated,
                Malformed::Ambiguous,
                Malformed::NotBearer,
                Malformed::BadEncoding,
            ]
            .map(Rejection::MalformedCredentials),
        );
        every
    }

    #[test]
    fn fixed_bodies_are_what_serde_json_writes() {
        for rejection in every_fixed() {
            let Text::Fixed(fixed) = rejection.text() else {
                panic!("{rejection:?} has no fixed body");
            };
            let serialized = serialize(rejection.status().as_u16(), fixed.reason, fixed.message);
            assert_eq!(fixed.json, serialized, "{rejection:?}");
        }
    }

    #[test]
    fn fixed_bodies_are_pinned() {
        let bodies: Vec<&str> = every_fixed()
            .iter()
            .filter_map(|rejection| match rejection.text() {
                Text::Fixed(fixed) => Some(fixed.json),
                Text::Scope(_) => None,
            })
            .collect();
        assert_eq!(
            bodies,
            [
                r#"{"error":{"code":401,"reason":"missing_credentials","message":"no API key was presented"}}"#,
                r#"{"error":{"code":401,"reason":"invalid_credentials","message":"the API key is not valid"}}"#,
                r#"{"error":{"code":401,"reason":"expired_credentials","message":"the API key has expired"}}"#,
                r#"{"error":{"code":401,"reason":"revoked_credentials","message":"the API key has been revoked"}}"#,
                r#"{"error":{"code":401,"reason":"invalid_signature","message":"the webhook signature is missing, malformed or wrong"}}"#,
                r#"{"error":{"code":401,"reason":"stale_signature","message":"the webhook timestamp is outside the accepted tolerance"}}"#,
                r#"{"error":{"code":403,"reason":"workspace_forbidden","message":"the API key may not use this workspace"}}"#,
                r#"{"error":{"code":429,"reason":"rate_limited","message":"the rate limit for this API key is exhausted"}}"#,
                r#"{"error":{"code":429,"reason":"too_many_failed_attempts","message":"too many failed authentication attempts from this client"}}"#,
                r#"{"error":{"code":503,"reason":"auth_unavailable","message":"authentication is temporarily unavailable"}}"#,
                r#"{"error":{"code":401,"reason":"malformed_credentials","message":"the API key is empty"}}"#,
                r#"{"error":{"code":401,"reason":"malformed_credentials","message":"the API key is too long"}}"#,
                r#"{"error":{"code":401,"reason":"malformed_credentials","message":"the API key contains characters outside visible ASCII"}}"#,
                r#"{"error":{"code":401,"reason":"malformed_credentials","message":"the API key was given more than once"}}"#,
                r#"{"error":{"code":401,"reason":"malformed_credentials","message":"API keys were given in more than one place"}}"#,
                r#"{"error":{"code":401,"reason":"malformed_credentials","message":"the Authorization header is not of the form `Bearer <key>`"}}"#,
                r#"{"error":{"code":401,"reason":"malformed_credentials","message":"the API key is not valid base64url (without padding)"}}"#,
            ]
        );
    }

    #[test]
    fn the_scope_is_escaped() -> Result<(), serde_json::Error> {
        let scope = "a\"b\\c\n</script>";
        let rejection = Rejection::InsufficientScope {
            scope: scope.to_owned().into(),
        };
        let body: serde_json::Value = serde_json::from_str(&rejection.json_body())?;
        assert_eq!(
            body["error"]["message"],
            format!("this action requires the scope `{scope}`")
        );
        assert_eq!(body["error"]["code"], 403);
        assert_eq!(body["error"]["reason"], INSUFFICIENT_SCOPE);
        Ok(())
    }

    #[test]
    fn text_needing_escapes_is_recognised() {
        assert!(needs_no_escape("plain `text` <with> 'marks' é"));
        for bad in ["a\"b", "a\\b", "a\nb", "\u{1}"] {
            assert!(!needs_no_escape(bad), "{bad:?}");
        }
    }
}
