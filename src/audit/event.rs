//! [`AuditEvent`]: one audited decision or action, and its [`Outcome`].

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{CredentialKind, Principal, key::KeyId};

/// How the audited decision or action ended.
///
/// Serialized and displayed as the lowercase word: `"admitted"`, `"refused"`,
/// `"succeeded"`, `"failed"`.
///
/// ```
/// use keygate::audit::Outcome;
///
/// assert_eq!(Outcome::Refused.to_string(), "refused");
/// assert_eq!(serde_json::to_string(&Outcome::Admitted)?, r#""admitted""#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The guard let the request through.
    Admitted,
    /// The guard refused the request.
    Refused,
    /// A handler reports that an action it performed succeeded.
    Succeeded,
    /// A handler reports that an action it attempted failed.
    Failed,
}

impl Outcome {
    /// The lowercase word for this outcome, as serialized.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Admitted => "admitted",
            Outcome::Refused => "refused",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
        }
    }

    /// `true` for [`Admitted`](Outcome::Admitted) and [`Succeeded`](Outcome::Succeeded).
    #[must_use]
    pub const fn is_success(self) -> bool {
        matches!(self, Outcome::Admitted | Outcome::Succeeded)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One audited decision or action.
///
/// Build it with [`AuditEvent::new`] and the `with_*` setters. Nothing in an event is
/// secret: it names a key by its public [`KeyId`], never by the key itself.
///
/// # Serialized form
///
/// A JSON object with the fields in declaration order; absent values are `null`, except
/// `token_id` and `credential`, which are left out when absent (records written before
/// they existed read back the same).
/// `timestamp` is RFC 3339 in UTC with exactly six fractional digits
/// (`"2026-11-23T10:00:00.123456Z"`), so timestamps sort as strings. Deserializing
/// accepts any RFC 3339 timestamp and converts it to UTC.
///
/// ```
/// use keygate::audit::{AuditEvent, Outcome};
/// use time::macros::datetime;
///
/// let event = AuditEvent::new("job.create", Outcome::Succeeded)
///     .with_timestamp(datetime!(2026-11-23 10:00:00.123456 UTC))
///     .with_principal_id("coordinator-eu");
/// let json = serde_json::to_string(&event)?;
/// assert!(json.starts_with(r#"{"timestamp":"2026-11-23T10:00:00.123456Z","#));
/// assert_eq!(serde_json::from_str::<AuditEvent>(&json)?, event);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened, in UTC, to the microsecond.
    #[serde(with = "super::timestamp")]
    pub timestamp: OffsetDateTime,
    /// The request's id (for example from `X-Request-Id`), if it had one.
    pub request_id: Option<String>,
    /// Who was calling, once known.
    pub principal_id: Option<String>,
    /// Which key was used, once known. Never the secret.
    pub key_id: Option<KeyId>,
    /// Which token was used (its `jti`), for a caller that presented a JWT: where an API
    /// key's id would go. Never the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// Which kind of credential was used (`api_key` or `jwt`), once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialKind>,
    /// The workspace the request or action concerns.
    pub workspace: Option<String>,
    /// What was attempted: method and path (`"POST /coordinator/jobs"`) or a name a
    /// handler gives (`"job.create"`).
    pub action: String,
    /// What the action applied to, when that is not the caller: a job id, the key id of a
    /// key that was issued, rotated or revoked, a principal that was registered.
    #[serde(default)]
    pub target: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// A machine-readable reason, such as `"invalid_credentials"` or `"rate_limited"`.
    pub reason: Option<String>,
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// The client's `User-Agent`.
    pub user_agent: Option<String>,
    /// How many decisions this record stands for: 1, except for the records in which an
    /// [`AggregatingSink`](super::AggregatingSink) counts the refusals of one client that
    /// followed the first in an interval. Serialized only when it is not 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
}

fn one() -> u64 {
    1
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_one(count: &u64) -> bool {
    *count == 1
}

impl AuditEvent {
    /// An event for `action` with `outcome`, timestamped now (UTC, truncated to the
    /// microsecond); every other field is empty.
    #[must_use]
    pub fn new(action: impl Into<String>, outcome: Outcome) -> Self {
        AuditEvent {
            timestamp: to_utc_micros(OffsetDateTime::now_utc()),
            request_id: None,
            principal_id: None,
            key_id: None,
            token_id: None,
            credential: None,
            workspace: None,
            action: action.into(),
            target: None,
            outcome,
            reason: None,
            client_ip: None,
            user_agent: None,
            count: 1,
        }
    }

    /// Sets the timestamp, converted to UTC and truncated to the microsecond.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: OffsetDateTime) -> Self {
        self.timestamp = to_utc_micros(timestamp);
        self
    }

    /// Sets the request id.
    #[must_use]
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Sets the principal id.
    #[must_use]
    pub fn with_principal_id(mut self, principal_id: impl Into<String>) -> Self {
        self.principal_id = Some(principal_id.into());
        self
    }

    /// Sets the key id.
    #[must_use]
    pub fn with_key_id(mut self, key_id: KeyId) -> Self {
        self.key_id = Some(key_id);
        self
    }

    /// Sets the token id (`jti`) of a JWT caller, capped at 256 bytes.
    #[must_use]
    pub fn with_token_id(mut self, token_id: impl Into<String>) -> Self {
        let mut token_id = token_id.into();
        let kept = super::request::truncate(&token_id, super::request::MAX_FIELD).len();
        token_id.truncate(kept);
        self.token_id = Some(token_id);
        self
    }

    /// Sets the kind of credential used.
    #[must_use]
    pub fn with_credential(mut self, kind: CredentialKind) -> Self {
        self.credential = Some(kind);
        self
    }

    /// Sets who was calling: the principal id, the kind of credential, and the key id of
    /// an API key or the token id (`jti`) of a JWT.
    ///
    /// ```
    /// use keygate::{AuditEvent, KeyDigest, KeyId, KeyRecord, Outcome, Principal};
    ///
    /// let record = KeyRecord::new(KeyId::generate()?, KeyDigest::of(b"..."), "coordinator-1");
    /// let event = AuditEvent::new("job.create", Outcome::Succeeded)
    ///     .with_principal(&Principal::new(record.into()));
    /// assert_eq!(event.principal_id.as_deref(), Some("coordinator-1"));
    /// assert!(event.key_id.is_some());
    /// # Ok::<(), keygate::KeyError>(())
    /// ```
    #[must_use]
    pub fn with_principal(mut self, principal: &Principal) -> Self {
        self.principal_id = Some(principal.id().to_owned());
        self.key_id = principal.key_id();
        if let Some(token_id) = principal.token_id() {
            self = self.with_token_id(token_id);
        }
        self.credential = Some(principal.credential_kind());
        self
    }

    /// Sets the workspace.
    #[must_use]
    pub fn with_workspace(mut self, workspace: impl Into<String>) -> Self {
        self.workspace = Some(workspace.into());
        self
    }

    /// Sets what the action applied to (a job id, a key id, ...).
    #[must_use]
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Sets the machine-readable reason.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets the client's address.
    #[must_use]
    pub fn with_client_ip(mut self, client_ip: IpAddr) -> Self {
        self.client_ip = Some(client_ip);
        self
    }

    /// Sets the client's user agent.
    #[must_use]
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }
}

/// Converts to UTC and drops sub-microsecond precision, so that an event survives a
/// round trip through its serialized form unchanged.
fn to_utc_micros(timestamp: OffsetDateTime) -> OffsetDateTime {
    let utc = timestamp.to_offset(time::UtcOffset::UTC);
    utc.replace_microsecond(utc.microsecond()).unwrap_or(utc)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::*;
    use time::macros::datetime;

    fn key_id() -> KeyId {
        "AbCdEf012345".parse().expect("valid key id")
    }

    fn full_event() -> AuditEvent {
        AuditEvent::new("POST /coordinator/jobs", Outcome::Refused)
            .with_timestamp(datetime!(2026-11-23 10:00:00.123456 UTC))
            .with_request_id("req-1")
            .with_principal_id("coordinator-eu")
            .with_key_id(key_id())
            .with_workspace("render")
            .with_target("job-42")
            .with_reason("invalid_credentials")
            .with_client_ip("2001:db8::1".parse().expect("ip"))
            .with_user_agent("curl/8.0")
    }

    #[test]
    fn event_round_trips_through_json() {
        let event = full_event();
        let json = serde_json::to_string(&event).expect("serialize");
        assert_eq!(
            json,
            r#"{"timestamp":"2026-11-23T10:00:00.123456Z","request_id":"req-1","principal_id":"coordinator-eu","key_id":"AbCdEf012345","workspace":"render","action":"POST /coordinator/jobs","target":"job-42","outcome":"refused","reason":"invalid_credentials","client_ip":"2001:db8::1","user_agent":"curl/8.0"}"#
        );
        let back: AuditEvent = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, event);
    }

    #[test]
    fn empty_fields_serialize_as_null_and_round_trip() {
        let event = AuditEvent::new("job.create", Outcome::Succeeded);
        let json = serde_json::to_string(&event).expect("serialize");
        assert!(json.contains(r#""request_id":null"#), "{json}");
        let back: AuditEvent = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, event);
    }

    #[test]
    fn timestamp_is_utc_with_six_fractional_digits() {
        let event = AuditEvent::new("x", Outcome::Admitted)
            .with_timestamp(datetime!(2026-11-23 12:00:00 +02:00));
        let json = serde_json::to_value(&event).expect("serialize");
        assert_eq!(json["timestamp"], "2026-11-23T10:00:00.000000Z");

        let now = serde_json::to_value(AuditEvent::new("x", Outcome::Admitted)).expect("now");
        let text = now["timestamp"].as_str().expect("string");
        assert_eq!(text.len(), "2026-11-23T10:00:00.123456Z".len(), "{text}");
        assert!(text.ends_with('Z'), "{text}");
    }

    #[test]
    fn sub_microseconds_are_truncated() {
        let event = AuditEvent::new("x", Outcome::Admitted)
            .with_timestamp(datetime!(2026-11-23 10:00:00.123456789 UTC));
        assert_eq!(event.timestamp, datetime!(2026-11-23 10:00:00.123456 UTC));
    }

    #[test]
    fn deserialize_accepts_offsets_and_converts_to_utc() {
        let json = r#"{"timestamp":"2026-11-23T12:00:00.5+02:00","request_id":null,"principal_id":null,"key_id":null,"workspace":null,"action":"x","outcome":"failed","reason":null,"client_ip":null,"user_agent":null}"#;
        let event: AuditEvent = serde_json::from_str(json).expect("deserialize");
        assert_eq!(event.timestamp, datetime!(2026-11-23 10:00:00.5 UTC));
        assert_eq!(event.timestamp.offset(), time::UtcOffset::UTC);
        assert_eq!(event.outcome, Outcome::Failed);
    }

    #[test]
    fn out_of_range_year_fails_to_serialize_instead_of_panicking() {
        let mut event = AuditEvent::new("x", Outcome::Admitted);
        event.timestamp = datetime!(-0001-01-01 0:00 UTC);
        assert!(serde_json::to_string(&event).is_err());
    }

    #[test]
    fn outcome_words() {
        for (outcome, word) in [
            (Outcome::Admitted, "admitted"),
            (Outcome::Refused, "refused"),
            (Outcome::Succeeded, "succeeded"),
            (Outcome::Failed, "failed"),
        ] {
            assert_eq!(outcome.to_string(), word);
            assert_eq!(
                serde_json::to_value(outcome).expect("serialize"),
                serde_json::Value::from(word)
            );
            let back: Outcome = serde_json::from_value(word.into()).expect("deserialize");
            assert_eq!(back, outcome);
        }
    }
}
