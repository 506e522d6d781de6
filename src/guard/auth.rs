//! The decision: verify a key and check its limit, as a future that is ready at once when
//! the backends are in memory.

use std::{
    future::Future,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use time::OffsetDateTime;

use super::GuardConfig;
use crate::{
    BackendFuture, KeyDigest, KeyStatus, Principal, Rejection,
    key::parse_visible,
    limit::{ClientKey, LimitError, RateLimitDecision},
    registry::LookupFuture,
};

/// A request that passed the guard.
#[derive(Debug)]
pub(crate) struct Admission {
    pub(crate) principal: Principal,
    pub(crate) rate: Option<RateLimitDecision>,
    /// Admitted although the limit backend failed (fail-open); audited as such.
    pub(crate) limit_failed_open: bool,
}

/// A request the guard refused, with what is known of its caller (for the audit record).
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) rejection: Rejection,
    pub(crate) principal: Option<Principal>,
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Self {
        Refusal {
            rejection,
            principal: None,
        }
    }
}

pub(crate) type Decision = Result<Admission, Refusal>;

/// Verifies the presented key, then checks the caller's rate limit: a future that owns
/// the guard's configuration (for network backends and [`ApiKeyGuard::authenticate`]).
///
/// [`ApiKeyGuard::authenticate`]: super::ApiKeyGuard::authenticate
#[derive(Debug)]
pub(crate) struct Authenticate {
    pub(crate) config: Arc<GuardConfig>,
    pub(crate) verification: Verification,
}

/// The state of one decision, driven with the configuration it was started with
/// ([`Verification::poll_with`]); in-memory backends decide on the first poll, with no
/// reference count touched.
#[derive(Debug)]
pub(crate) struct Verification {
    presented: KeyDigest,
    client: Option<ClientKey>,
    step: Step,
}

#[derive(Debug)]
enum Step {
    Lookup(LookupFuture),
    Limit {
        principal: Option<Principal>,
        check: BackendFuture<'static, Result<RateLimitDecision, LimitError>>,
    },
    Done,
}

impl Verification {
    /// Starts the decision for a credential already pulled from the request (and checked
    /// to be visible ASCII). Refuses at once what needs no lookup: a client that failed
    /// too often, a bad checksum, a short key.
    pub(crate) fn start(
        config: &GuardConfig,
        credential: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<Self, Refusal> {
        let client = client_ip.map(ClientKey::from);
        if let (Some(limiter), Some(client)) = (&config.failed_attempts, client)
            && let Err(retry_after) = limiter.check(client)
        {
            return Err(Rejection::TooManyFailedAttempts { retry_after }.into());
        }
        let Ok(parsed) = parse_visible(credential.as_bytes()) else {
            // Bad checksum, or too short to be any registered key: no lookup, no digest.
            return Err(fail(config, client, Rejection::InvalidCredentials, None));
        };
        let presented = KeyDigest::of(credential.as_bytes());
        let lookup = match parsed.key_id() {
            Some(key_id) => config.registry.find_by_id(&key_id),
            None => config.registry.find_by_digest(&presented),
        };
        Ok(Self {
            presented,
            client,
            step: Step::Lookup(lookup),
        })
    }

    fn verified(
        &mut self,
        config: &GuardConfig,
        found: Option<Arc<crate::KeyRecord>>,
    ) -> Result<Option<Admission>, Refusal> {
        let Some(record) = found.filter(|record| record.digest.ct_eq(&self.presented)) else {
            return Err(fail(
                config,
                self.client,
                Rejection::InvalidCredentials,
                None,
            ));
        };
        let now = record.is_time_bound().then(OffsetDateTime::now_utc);
        if let Some(now) = now {
            match record.status_at(now) {
                KeyStatus::Active => {}
                KeyStatus::Expired => {
                    let principal = Some(Principal::new(record));
                    return Err(fail(
                        config,
                        self.client,
                        Rejection::ExpiredCredentials,
                        principal,
                    ));
                }
                _ => {
                    let principal = Some(Principal::new(record));
                    return Err(fail(
                        config,
                        self.client,
                        Rejection::RevokedCredentials,
                        principal,
                    ));
                }
            }
        }
        let principal = Principal::new(record);
        match &config.rate_limit {
            None => Ok(Some(Admission {
                principal,
                rate: None,
                limit_failed_open: false,
            })),
            Some(limit) => {
                let key = match limit.key_by {
                    super::LimitBy::Principal => principal.id(),
                    super::LimitBy::Key => principal.key_id_str(),
                };
                let check = limit.backend.check(key, principal.tier(), limit.cost);
                self.step = Step::Limit {
                    principal: Some(principal),
                    check,
                };
                Ok(None)
            }
        }
    }

    fn limited(
        config: &GuardConfig,
        principal: Principal,
        result: Result<RateLimitDecision, LimitError>,
    ) -> Decision {
        match result {
            Ok(decision) if decision.allowed => Ok(Admission {
                principal,
                rate: Some(decision),
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
                        rejection: Rejection::AuthUnavailable {
                            retry_after: config.unavailable_retry_after,
                        },
                        principal: Some(principal),
                    })
                }
            }
        }
    }
}

/// Counts a failure against the client and builds the refusal.
fn fail(
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

impl Future for Authenticate {
    type Output = Decision;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Decision> {
        let this = self.get_mut();
        this.verification.poll_with(&this.config, cx)
    }
}

impl Verification {
    /// Drives the decision with the configuration it was started with.
    pub(crate) fn poll_with(
        &mut self,
        config: &GuardConfig,
        cx: &mut Context<'_>,
    ) -> Poll<Decision> {
        loop {
            match &mut self.step {
                Step::Lookup(lookup) => {
                    let found = match ready!(Pin::new(lookup).poll(cx)) {
                        Ok(found) => found,
                        Err(error) => {
                            self.step = Step::Done;
                            tracing::warn!(error = %error, "keygate: key registry failed");
                            return Poll::Ready(Err(Rejection::AuthUnavailable {
                                retry_after: config.unavailable_retry_after,
                            }
                            .into()));
                        }
                    };
                    self.step = Step::Done;
                    match self.verified(config, found) {
                        Ok(Some(admission)) => return Poll::Ready(Ok(admission)),
                        Ok(None) => continue,
                        Err(refusal) => return Poll::Ready(Err(refusal)),
                    }
                }
                Step::Limit { principal, check } => {
                    let result = ready!(Pin::new(check).poll(cx));
                    let principal = principal.take();
                    self.step = Step::Done;
                    let Some(principal) = principal else {
                        return Poll::Ready(Err(Rejection::AuthUnavailable {
                            retry_after: config.unavailable_retry_after,
                        }
                        .into()));
                    };
                    return Poll::Ready(Self::limited(config, principal, result));
                }
                Step::Done => {
                    // Polled after completion: answer safely rather than panic.
                    return Poll::Ready(Err(Rejection::AuthUnavailable {
                        retry_after: config.unavailable_retry_after,
                    }
                    .into()));
                }
            }
        }
    }
}

pub(crate) fn ready_now(auth: &mut Verification, config: &GuardConfig) -> Option<Decision> {
    // Poll once with a no-op waker: in-memory backends answer at once, so the common path
    // decides inside `call` without cloning the inner service or allocating a future.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match auth.poll_with(config, &mut cx) {
        Poll::Ready(decision) => Some(decision),
        Poll::Pending => None,
    }
}
