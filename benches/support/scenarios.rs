//! The scenarios of the `guard` benchmark as named closures, for the binaries that count
//! (allocations, instructions) rather than time: each call builds one request, sends it
//! through the scenario's service and drops the response.
//!
//! Every scenario names its baseline: the inner service alone, fed the same requests, so
//! that subtracting it leaves the layers' own work.

use std::{fmt, hint::black_box};

use http::{Request, Response, StatusCode};
use tower::{Layer as _, Service};

use crate::fixtures::{
    Keys, Stages, call, expect_status, failed_attempt_limiter, generate, guard, inner, inner_body,
    registry, registry_of_size, request, request_from_client, tower_stack,
    tower_stack_with_headers,
};

/// One request through one service.
pub(crate) type Run = Box<dyn FnMut()>;

/// A scenario: its name (the `guard` benchmark's id) and its baseline's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) baseline: &'static str,
}

const fn scenario(name: &'static str, baseline: &'static str) -> Scenario {
    Scenario { name, baseline }
}

const NO_GUARD: &str = "admitted/no_guard";
const NO_GUARD_CLIENT: &str = "admitted/no_guard/client_addr";
const STACK_NO_GUARD: &str = "stack/no_guard";

/// Every scenario, baselines included (a baseline is its own baseline).
pub(crate) const SCENARIOS: &[Scenario] = &[
    scenario(NO_GUARD, NO_GUARD),
    scenario("admitted/guard+limiter/generated_key", NO_GUARD),
    scenario("admitted/guard+limiter/opaque_key", NO_GUARD),
    scenario("admitted/guard+limiter/no_headers", NO_GUARD),
    scenario("admitted/guard/generated_key", NO_GUARD),
    scenario(NO_GUARD_CLIENT, NO_GUARD_CLIENT),
    scenario(
        "admitted/guard+limiter+failed_attempts/generated_key",
        NO_GUARD_CLIENT,
    ),
    scenario("registry/1", NO_GUARD),
    scenario("registry/10000", NO_GUARD),
    scenario("registry/1000000", NO_GUARD),
    scenario("refused/missing_key", NO_GUARD),
    scenario("refused/bad_checksum", NO_GUARD),
    scenario("refused/unknown_key", NO_GUARD),
    scenario("refused/rate_limited", NO_GUARD),
    scenario("refused/too_many_failed_attempts", NO_GUARD_CLIENT),
    scenario(STACK_NO_GUARD, STACK_NO_GUARD),
    scenario("stack/tower-http+tower_governor", STACK_NO_GUARD),
    scenario("stack/tower-http+tower_governor/headers", STACK_NO_GUARD),
    scenario("stack/keygate", STACK_NO_GUARD),
];

/// The scenario called `name`, ready to run (its service made, and checked to answer the
/// status the scenario is about).
pub(crate) fn run(name: &str) -> Option<Run> {
    let (registry, keys) = registry();
    let Keys {
        generated,
        opaque,
        exhausted,
        unknown,
        bad_checksum,
    } = keys;
    let with_key = |key: String| move || request(Some(&key));
    let from_client = |key: String| move || request_from_client(Some(&key));
    let limited = || guard(&registry, Stages::limited()).layer(inner());
    let ok = StatusCode::OK;
    let unauthorized = StatusCode::UNAUTHORIZED;
    let too_many = StatusCode::TOO_MANY_REQUESTS;
    let run = match name {
        NO_GUARD => runner(inner(), with_key(generated), ok),
        "admitted/guard+limiter/generated_key" => runner(limited(), with_key(generated), ok),
        "admitted/guard+limiter/opaque_key" => runner(limited(), with_key(opaque), ok),
        "admitted/guard+limiter/no_headers" => runner(
            guard(&registry, Stages::limited_without_headers()).layer(inner()),
            with_key(generated),
            ok,
        ),
        "admitted/guard/generated_key" => runner(
            guard(&registry, Stages::guard_only()).layer(inner()),
            with_key(generated),
            ok,
        ),
        NO_GUARD_CLIENT => runner(inner(), from_client(generated), ok),
        "admitted/guard+limiter+failed_attempts/generated_key" => runner(
            guard(
                &registry,
                Stages::limited().failed_attempts(failed_attempt_limiter(false)),
            )
            .layer(inner()),
            from_client(generated),
            ok,
        ),
        "registry/1" | "registry/10000" | "registry/1000000" => {
            let size = name["registry/".len()..].parse().expect("a registry size");
            let key = generate();
            let registry = registry_of_size(&key, size);
            let service = guard(&registry, Stages::limited()).layer(inner());
            runner(service, with_key(key.expose_secret().to_owned()), ok)
        }
        "refused/missing_key" => runner(limited(), || request(None), unauthorized),
        "refused/bad_checksum" => runner(limited(), with_key(bad_checksum), unauthorized),
        "refused/unknown_key" => runner(limited(), with_key(unknown), unauthorized),
        "refused/rate_limited" => {
            let mut service = limited();
            // The first request uses up the hour's single request.
            expect_status(&mut service, request(Some(&exhausted)), ok);
            runner(service, with_key(exhausted), too_many)
        }
        "refused/too_many_failed_attempts" => runner(
            guard(
                &registry,
                Stages::limited().failed_attempts(failed_attempt_limiter(true)),
            )
            .layer(inner()),
            from_client(generated),
            too_many,
        ),
        STACK_NO_GUARD => runner(inner_body(), with_key(generated), ok),
        "stack/tower-http+tower_governor" => {
            runner(tower_stack(&generated), with_key(generated), ok)
        }
        "stack/tower-http+tower_governor/headers" => runner(
            tower_stack_with_headers(&generated),
            with_key(generated),
            ok,
        ),
        "stack/keygate" => runner(
            guard(&registry, Stages::limited()).layer(inner_body()),
            with_key(generated),
            ok,
        ),
        _ => return None,
    };
    Some(run)
}

/// A [`Run`] of `service` on requests from `request`, after checking that it answers
/// `status`.
fn runner<S, B>(
    mut service: S,
    request: impl Fn() -> Request<()> + 'static,
    status: StatusCode,
) -> Run
where
    S: Service<Request<()>, Response = Response<B>> + 'static,
    S::Error: fmt::Debug,
{
    expect_status(&mut service, request(), status);
    Box::new(move || {
        black_box(call(&mut service, request()));
    })
}
