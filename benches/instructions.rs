//! Runs one scenario of the `guard` benchmark a given number of times and nothing else,
//! for instruction counts under `valgrind --tool=callgrind`, which are repeatable where
//! times on a shared machine are not. `scripts/callgrind.sh` runs it twice per scenario
//! (N and N + 10,000 requests) and reports the difference per request.
//!
//! ```text
//! instructions <scenario> <requests>
//! instructions --list
//! ```
//!
//! Not run by `cargo bench` (`bench = false`).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::process::ExitCode;

// Not every helper is used by every binary that shares these modules.
#[allow(dead_code)]
#[path = "support/fixtures.rs"]
mod fixtures;
#[path = "support/scenarios.rs"]
mod scenarios;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    match args.as_slice() {
        [list] if list == "--list" => {
            for scenario in scenarios::SCENARIOS {
                println!("{} {}", scenario.name, scenario.baseline);
            }
            ExitCode::SUCCESS
        }
        [name, requests] => {
            let Ok(requests) = requests.parse::<u64>() else {
                eprintln!("`{requests}` is not a number of requests");
                return ExitCode::FAILURE;
            };
            let Some(mut run) = scenarios::run(name) else {
                eprintln!("no scenario `{name}`: see `--list`");
                return ExitCode::FAILURE;
            };
            for _ in 0..requests {
                run();
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("usage: instructions <scenario> <requests> | instructions --list");
            ExitCode::FAILURE
        }
    }
}
