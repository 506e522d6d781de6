//! The decision: stages 3 to 5 of the request path (failed attempts, verification, rate
//! limit), and what follows every decision, in one place ([`GuardConfig::conclude`]).
//!
//! A decision goes as far as the backends answer at once ([`Verification::start`]): the
//! whole way for in-memory backends, inside `call`, with nothing boxed and nothing
//! polled. A network backend's answer makes it wait, as a small state machine polled in
//! the response future with the configuration it was started with.

use std::{
    future::Future,
    mem,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use time::OffsetDateTime;

use super::{
    AuditFailure, GuardConfig,
    routes::{Access, Requirement},
};
use crate::{
    BackendFuture, KeyDigest, KeyRecord, KeyStatus, Malformed, Outcome, Principal, RegistryError,
    Rejection,
    audit::RequestFacts,
    key::parse_visible,
    limit::{ClientKey, LimitBy, LimitError, RateLimitDecision},
    registry::LookupFuture,
};

/// A caller the guard admits.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) principal: Principal,
    /// The rate-limit decision, for the response headers.
    pub(crate) rate: Option<RateLimitDecision>,
    /// Admitted although the limit backend failed (fail-open); audited as such.
    limit_failed_open: bool,
}

/// A refusal, with what is known of the caller (for the audit record).
#[derive(Debug)]
pub(crate) struct Refusal {
    rejection: Rejection,
    principal: Option<Principal>,
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Self {
        Refusal {
            rejection,
            principal: None,
        }
    }
}

/// The outcome of stages 2 to 5.
pub(crate) type Decision = Result<Admission, Refusal>;

/// Where a decision stands once it has gone as far as it can without waiting.
#[derive(Debug)]
pub(crate) enum Started {
    /// Decided: every backend asked answered at once (the in-memory ones always do).
    Decided(Decision),
    /// Waiting for a network backend's answer ([`Verification::poll_with`]).
    Waiting(Verification),
}

impl From<Refusal> for Started {
    fn from(refusal: Refusal) -> Self {
        Started::Decided(Err(refusal))
    }
}

/// One decision in progress.
#[derive(Debug)]
pub(crate) struct Verification {
    client: Option<ClientKey>,
    /// How long the client is still blocked by the failed-attempt limiter, when it is:
    /// it came through only to have its key verified (see `Passage`), and any failure is
    /// answered 429.
    blocked: Option<Duration>,
    /// What the route asks of a valid credential (scopes, cost), kept only while the
    /// decision waits for a network backend: a decision taken in `call` borrows it from
    /// the route rules instead, as cloning it (its scopes are an `Arc`) would write the
    /// scopes' shared reference count on every request to a scoped route, on every core.
    requirement: Requirement,
    step: Step,
}

#[derive(Debug)]
enum Step {
    /// Stage 4: waiting for the registry, to compare the presented key's digest.
    Lookup {
        lookup: LookupFuture,
        presented: KeyDigest,
    },
    /// Decided without waiting (a token verified, no rate limit configured).
    Decided(Decision),
    /// Stage 5: the key verified; waiting for the limit backend.
    Limit {
        principal: Principal,
        check: BackendFuture<'static, Result<RateLimitDecision, LimitError>>,
    },
    /// The decision was returned.
    Done,
}

/// Where a step leads: to the decision, or to the next step.
enum Progress {
    Decided(Decision),
    Next(Step),
}

impl Verification {
    /// Starts the decision for a credential already pulled from the request (and checked
    /// to be visible ASCII), and takes it as far as the backends answer at once. Refuses
    /// at once what needs no lookup: a client that failed too often (stage 3; unless its
    /// credential may pass to be verified, see the failed-attempt limiter's `Passage`), a
    /// bad checksum or a key too short to be registered.
    ///
    /// With a JWT verifier (feature `jwt`), a credential shaped like a JWT (or any
    /// credential, when the guard takes no API keys) is verified here, without a lookup,
    /// and goes on to the rate limit like a verified key; anything else goes to the
    /// registry.
    pub(crate) fn start(
        config: &GuardConfig,
        credential: &str,
        client_ip: Option<IpAddr>,
        access: &Access,
    ) -> Started {
        let requirement = access.requirement();
        let client = client_ip.map(ClientKey::from);
        let mut blocked = None;
        if let Some(limiter) = &config.failed_attempts {
            match client {
                Some(client) => blocked = limiter.check(client).err(),
                None => config.warn_no_client_address(),
            }
        }
        // From a blocked client, only a credential that can verify goes on.
        let refuse_blocked = |retry_after| Rejection::TooManyFailedAttempts { retry_after };
        let passage = config
            .failed_attempts
            .as_ref()
            .and_then(|limiter| limiter.passage());
        #[cfg(feature = "jwt")]
        if let Some(verifier) = &config.jwt
            && (!config.api_keys || crate::jwt::is_jwt_shaped(credential))
        {
            if let Some(retry_after) = blocked
                && !passage.is_some_and(crate::limit::passage::Passage::take_from_budget)
            {
                return Refusal::from(refuse_blocked(retry_after)).into();
            }
            // A token needs no lookup: verifying it is the whole check.
            return match (verifier.verify(credential), blocked) {
                (Ok(principal), _) => {
                    let step = Self::admit(config, principal, requirement);
                    Self::new(client, blocked).started(config, step, requirement)
                }
                (Err(_), Some(retry_after)) => Refusal::from(refuse_blocked(retry_after)).into(),
                (Err(rejection @ Rejection::MalformedCredentials(_)), None) => {
                    Refusal::from(rejection).into()
                }
                (Err(rejection), None) => failure(config, client, rejection, None).into(),
            };
        }
        if credential.len() > config.max_key_len {
            // Only a guard that also takes tokens extracts credentials longer than this.
            return Refusal::from(Rejection::MalformedCredentials(Malformed::TooLong)).into();
        }
        let parsed = parse_visible(credential.as_bytes());
        if let Some(retry_after) = blocked {
            // Only a generated key that passes (its key id verified lately, or the
            // shared budget allows one more lookup) is looked up; nothing is counted.
            let passes = parsed
                .as_ref()
                .ok()
                .and_then(crate::key::ParsedKey::key_id)
                .zip(passage)
                .is_some_and(|(key_id, passage)| passage.may_pass(&key_id));
            if !passes {
                return Refusal::from(refuse_blocked(retry_after)).into();
            }
        }
        let Ok(parsed) = parsed else {
            // No lookup, no digest.
            return failure(config, client, Rejection::InvalidCredentials, None).into();
        };
        let presented = KeyDigest::of(credential.as_bytes());
        let lookup = match parsed.key_id() {
            Some(key_id) => config.registry.find_by_id(&key_id),
            None => config.registry.find_by_digest(&presented),
        };
        Self::new(client, blocked).started(config, Step::Lookup { lookup, presented }, requirement)
    }

    fn new(client: Option<ClientKey>, blocked: Option<Duration>) -> Self {
        Self {
            client,
            blocked,
            requirement: Requirement::default(),
            step: Step::Done,
        }
    }

    /// Takes the decision, from `step`, as far as the backends answer at once:
    /// [`Started::Decided`], or [`Started::Waiting`] with the step left waiting, to be
    /// polled.
    ///
    /// The route's `requirement` is cloned into the decision only when it waits.
    fn started(mut self, config: &GuardConfig, step: Step, requirement: &Requirement) -> Started {
        if let Some(decision) = self.go_on(config, step, requirement) {
            return Started::Decided(decision);
        }
        self.requirement = requirement.clone();
        Started::Waiting(self)
    }

    /// The one continuation of a decision: takes `step`, and those it leads to, as far as
    /// their answers are known. Each answer already known is taken without polling;
    /// returns the decision, or `None` with the step that waits for its answer kept, to
    /// be polled ([`Self::poll_with`]).
    ///
    /// The step goes by value, not through `self.step`: callgrind counted about 200 more
    /// instructions per admitted request with the latter (six counts of each build). One
    /// continuation for both paths costs about 110 instructions (0.7 %) against one
    /// written out for each, for an extra call: a cost kept for having it once.
    ///
    /// # Panics
    ///
    /// When `step` is [`Step::Done`].
    fn go_on(
        &mut self,
        config: &GuardConfig,
        mut step: Step,
        requirement: &Requirement,
    ) -> Option<Decision> {
        loop {
            step = match step {
                Step::Lookup { lookup, presented } => match lookup.into_ready() {
                    Ok(found) => match self.verified(config, &presented, found, requirement) {
                        Progress::Decided(decision) => return Some(decision),
                        Progress::Next(next) => next,
                    },
                    Err(lookup) => {
                        self.step = Step::Lookup { lookup, presented };
                        return None;
                    }
                },
                Step::Limit { principal, check } => match check.into_ready() {
                    Ok(result) => return Some(limited(config, principal, result)),
                    Err(check) => {
                        self.step = Step::Limit { principal, check };
                        return None;
                    }
                },
                Step::Decided(decision) => return Some(decision),
                Step::Done => panic!("keygate: a decision went on after completion"),
            };
        }
    }

    /// Counts a failure against the client and builds the refusal: `rejection`, or 429
    /// `too_many_failed_attempts` for a blocked client that came through to have its key
    /// verified.
    fn failed(
        &self,
        config: &GuardConfig,
        rejection: Rejection,
        principal: Option<Principal>,
    ) -> Refusal {
        let rejection = match self.blocked {
            Some(retry_after) => Rejection::TooManyFailedAttempts { retry_after },
            None => rejection,
        };
        failure(config, self.client, rejection, principal)
    }

    /// Drives the decision with the configuration it was started with: polls the step
    /// left waiting and, once it has its answer, goes on with the answer as a ready one
    /// ([`Self::go_on`]).
    ///
    /// # Panics
    ///
    /// When polled again after it returned its decision.
    pub(crate) fn poll_with(
        &mut self,
        config: &GuardConfig,
        cx: &mut Context<'_>,
    ) -> Poll<Decision> {
        loop {
            let mut step = mem::replace(&mut self.step, Step::Done);
            let polled = match &mut step {
                Step::Lookup { lookup, .. } => Pin::new(&mut *lookup)
                    .poll(cx)
                    .map(|found| *lookup = BackendFuture::ready(found)),
                Step::Limit { check, .. } => Pin::new(&mut *check)
                    .poll(cx)
                    .map(|result| *check = BackendFuture::ready(result)),
                Step::Decided(_) => Poll::Ready(()),
                Step::Done => panic!("keygate: a decision was polled after completion"),
            };
            if polled.is_pending() {
                self.step = step;
                return Poll::Pending;
            }
            // Taken out for the call (`go_on` borrows `self` mutably), and put back.
            let requirement = mem::take(&mut self.requirement);
            let decision = self.go_on(config, step, &requirement);
            self.requirement = requirement;
            if let Some(decision) = decision {
                return Poll::Ready(decision);
            }
        }
    }

    /// Stage 4 with the registry's answer: the digest compared in constant time, then
    /// the key's status; stage 5 starts for a key that verifies.
    fn verified(
        &self,
        config: &GuardConfig,
        presented: &KeyDigest,
        found: Result<Option<Arc<KeyRecord>>, RegistryError>,
        requirement: &Requirement,
    ) -> Progress {
        let found = match found {
            Ok(found) => found,
            Err(error) => {
                // An outage never looks like a bad key: no failure is counted.
                tracing::warn!(error = %error, "keygate: key registry failed");
                return Progress::Decided(Err(config.unavailable().into()));
            }
        };
        let Some(record) = found.filter(|record| record.digest.ct_eq(presented)) else {
            return Progress::Decided(Err(self.failed(
                config,
                Rejection::InvalidCredentials,
                None,
            )));
        };
        if record.is_time_bound() {
            let refused = match record.status_at(OffsetDateTime::now_utc()) {
                KeyStatus::Active => None,
                KeyStatus::Expired => Some(Rejection::ExpiredCredentials),
                _ => Some(Rejection::RevokedCredentials),
            };
            if let Some(rejection) = refused {
                let principal = Some(Principal::new(record));
                return Progress::Decided(Err(self.failed(config, rejection, principal)));
            }
        }
        if self.blocked.is_some()
            && let Some(passage) = config
                .failed_attempts
                .as_ref()
                .and_then(|limiter| limiter.passage())
        {
            // Its neighbour failed; this caller's key verified: next time it goes straight
            // to its lookup.
            passage.note_passed(record.key_id);
        }
        match Self::admit(config, Principal::new(record), requirement) {
            Step::Decided(decision) => Progress::Decided(decision),
            step => Progress::Next(step),
        }
    }

    /// Stage 5 for a verified caller, whatever its credential: the route's scopes (before
    /// anything is counted), then the rate-limit check at the route's cost, or the
    /// admission when no limit is configured.
    fn admit(config: &GuardConfig, principal: Principal, requirement: &Requirement) -> Step {
        if let Some(missing) = requirement
            .scopes
            .iter()
            .flat_map(|scopes| scopes.iter())
            .find(|scope| !principal.has_scope(scope))
        {
            return Step::Decided(Err(Refusal {
                rejection: Rejection::InsufficientScope {
                    scope: missing.clone().into(),
                },
                principal: Some(principal),
            }));
        }
        let Some(limit) = &config.rate_limit else {
            return Step::Decided(Ok(Admission {
                principal,
                rate: None,
                limit_failed_open: false,
            }));
        };
        let key = match limit.key_by {
            LimitBy::Principal => principal.id(),
            LimitBy::Key => principal.key_id_str(),
        };
        let cost = requirement.cost.unwrap_or(limit.cost);
        let check = limit.backend.check(key, principal.tier(), cost);
        Step::Limit { principal, check }
    }
}

/// Stage 5 with the limit backend's answer.
fn limited(
    config: &GuardConfig,
    principal: Principal,
    result: Result<RateLimitDecision, LimitError>,
) -> Decision {
    match result {
        Ok(decision) if decision.allowed => Ok(Admission {
            principal,
            // Kept only for the headers: left out when the limit says so.
            rate: config
                .rate_limit
                .as_ref()
                .is_some_and(|limit| limit.admitted_headers)
                .then_some(decision),
            limit_failed_open: false,
        }),
        Ok(decision) => Err(Refusal {
            rejection: Rejection::RateLimited(decision),
            principal: Some(principal),
        }),
        Err(error) => {
            // Only an outage may fail open; a cost that can never fit is a
            // misconfiguration and always refuses.
            let fail_open = matches!(error, LimitError::Unavailable(_))
                && config
                    .rate_limit
                    .as_ref()
                    .is_some_and(|limit| limit.fail_open);
            tracing::warn!(error = %error, fail_open, "keygate: rate-limit backend failed");
            if fail_open {
                Ok(Admission {
                    principal,
                    rate: None,
                    limit_failed_open: true,
                })
            } else {
                Err(Refusal {
                    rejection: config.unavailable(),
                    principal: Some(principal),
                })
            }
        }
    }
}

/// Counts a failure against the client and builds the refusal.
fn failure(
    config: &GuardConfig,
    client: Option<ClientKey>,
    rejection: Rejection,
    principal: Option<Principal>,
) -> Refusal {
    if let (Some(limiter), Some(client)) = (&config.failed_attempts, client) {
        // The attempt that uses up the allowance is still answered for what it is; the next
        // one is refused before any lookup.
        let _ = limiter.record_failure(client);
    }
    Refusal {
        rejection,
        principal,
    }
}

impl GuardConfig {
    /// 503 `auth_unavailable`: a backend could not answer.
    fn unavailable(&self) -> Rejection {
        Rejection::AuthUnavailable {
            retry_after: self.unavailable_retry_after,
        }
    }

    /// What follows every decision, whoever asked for it (the service's `call`, its
    /// response future, [`ApiKeyGuard::authenticate`](super::ApiKeyGuard::authenticate)):
    /// the audit record, and for an admitted caller the key's use noted in the registry.
    /// Returns the admission, whose principal goes to the caller, or the refusal to render.
    #[allow(
        clippy::inline_always,
        reason = "measured: see `proceed` in service.rs"
    )]
    #[inline(always)]
    pub(crate) fn conclude(
        &self,
        decision: Decision,
        facts: Option<RequestFacts>,
    ) -> Result<Admission, Rejection> {
        match decision {
            Ok(admission) => {
                if let (Some(sink), Some(facts)) = (&self.audit, facts) {
                    let mut event = facts
                        .into_event(Outcome::Admitted)
                        .with_principal(&admission.principal);
                    if admission.limit_failed_open {
                        event = event.with_reason("rate_limit_unavailable_failed_open");
                    }
                    sink.record(event);
                    if self.audit_failure == AuditFailure::Refuse && !sink.healthy() {
                        return Err(self.unavailable());
                    }
                }
                if let Some(key_id) = admission.principal.key_id() {
                    self.registry.mark_used(&key_id, self.last_use.now());
                }
                Ok(admission)
            }
            Err(refusal) => {
                if let (Some(sink), Some(facts)) = (&self.audit, facts) {
                    let mut event = facts
                        .into_event(Outcome::Refused)
                        .with_reason(refusal.rejection.reason());
                    if let Some(principal) = &refusal.principal {
                        event = event.with_principal(principal);
                    }
                    sink.record(event);
                }
                Err(refusal.rejection)
            }
        }
    }
}
