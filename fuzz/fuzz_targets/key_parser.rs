//! The key parser on arbitrary text: never panics, and a key it accepts is one whose
//! checksum and key id read back the same.
#![no_main]

use keygate::{ApiKey, key::parse_credential};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = parse_credential(text) {
        let key_id = parsed.key_id();
        // The same text parsed as a key agrees with the credential parser.
        if let Ok(key) = ApiKey::new(text) {
            assert_eq!(key.parse().ok().and_then(|p| p.key_id()), key_id);
        }
    }
    let _ = ApiKey::new(text).map(|key| key.digest());
});
