//! `verify_chain` on arbitrary bytes: never a panic, and never more memory than its line
//! bound allows (libFuzzer's `-rss_limit_mb` catches a regression).
#![no_main]

use keygate::audit::verify_chain;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = verify_chain(data);
});
