//! The signature header's grammar: `t=<digits>,v1=<64 hex>[,<key>=<value>...]`, parsed
//! strictly and without allocating.

use super::SignatureError;

/// Longest accepted `t` value: `u64::MAX` has 20 decimal digits.
const MAX_TIMESTAMP_DIGITS: usize = 20;

/// Length of a `v1` value: the hex form of a 32-byte HMAC-SHA256 tag.
const SIGNATURE_HEX_LEN: usize = 64;

#[derive(Debug)]
pub(super) struct ParsedHeader<'a> {
    /// The whole header value.
    value: &'a [u8],
    /// `t` as written: the exact bytes that were signed.
    pub(super) timestamp_digits: &'a [u8],
    /// `t` as a number.
    pub(super) timestamp: u64,
}

impl<'a> ParsedHeader<'a> {
    /// Checks the whole header without allocating: length, charset, one valid `t`, at
    /// least one `v1`, every `v1` 64 hex digits, every key alphanumeric.
    pub(super) fn parse(value: &'a [u8], max_len: usize) -> Result<Self, SignatureError> {
        if value.len() > max_len || !value.iter().all(u8::is_ascii_graphic) {
            return Err(SignatureError::Malformed);
        }
        let mut timestamp = None;
        let mut has_signature = false;
        for item in value.split(|&byte| byte == b',') {
            let (key, field) = split_item(item).ok_or(SignatureError::Malformed)?;
            match key {
                b"t" => {
                    if timestamp.is_some() {
                        return Err(SignatureError::Malformed);
                    }
                    let number = parse_timestamp(field).ok_or(SignatureError::Malformed)?;
                    timestamp = Some((field, number));
                }
                b"v1" => {
                    if field.len() != SIGNATURE_HEX_LEN || !field.iter().all(u8::is_ascii_hexdigit)
                    {
                        return Err(SignatureError::Malformed);
                    }
                    has_signature = true;
                }
                _ => {
                    if key.is_empty() || !key.iter().all(u8::is_ascii_alphanumeric) {
                        return Err(SignatureError::Malformed);
                    }
                }
            }
        }
        match timestamp {
            Some((timestamp_digits, timestamp)) if has_signature => Ok(Self {
                value,
                timestamp_digits,
                timestamp,
            }),
            _ => Err(SignatureError::Malformed),
        }
    }

    /// The decoded `v1` signatures, in order.
    pub(super) fn signatures(&self) -> impl Iterator<Item = [u8; 32]> + 'a {
        self.value
            .split(|&byte| byte == b',')
            .filter_map(split_item)
            .filter(|(key, _)| *key == b"v1")
            .filter_map(|(_, field)| {
                let mut tag = [0_u8; 32];
                hex::decode_to_slice(field, &mut tag).ok().map(|()| tag)
            })
    }
}

/// Splits `key=value` at the first `=`.
fn split_item(item: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = item.iter().position(|&byte| byte == b'=')?;
    Some((&item[..at], &item[at + 1..]))
}

/// Parses 1 to 20 ASCII digits into a `u64` (no sign, no overflow).
fn parse_timestamp(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > MAX_TIMESTAMP_DIGITS {
        return None;
    }
    digits.iter().try_fold(0_u64, |number, &digit| {
        if !digit.is_ascii_digit() {
            return None;
        }
        number.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::super::DEFAULT_MAX_HEADER_LEN;
    use super::super::testing::{T, TestResult, valid_v1};
    use super::*;

    fn parse(value: &[u8]) -> Result<ParsedHeader<'_>, SignatureError> {
        ParsedHeader::parse(value, DEFAULT_MAX_HEADER_LEN)
    }

    #[test]
    fn well_formed_header_gives_timestamp_and_signatures() -> TestResult {
        let v1 = valid_v1()?;
        let value = format!("v0=legacy,t=0{T},v1={v1},v1={}", v1.to_ascii_uppercase());
        let parsed = parse(value.as_bytes())?;
        assert_eq!(parsed.timestamp, T);
        assert_eq!(parsed.timestamp_digits, format!("0{T}").as_bytes());
        let signatures: Vec<[u8; 32]> = parsed.signatures().collect();
        assert_eq!(signatures.len(), 2);
        assert_eq!(signatures[0], signatures[1]);
        assert_eq!(hex::encode(signatures[0]), v1);
        Ok(())
    }

    #[test]
    fn malformed_headers_are_malformed() -> TestResult {
        let v1 = valid_v1()?;
        let cases = [
            ("empty", String::new()),
            ("no t", format!("v1={v1}")),
            ("no v1", format!("t={T}")),
            ("only unknown schemes", format!("t={T},v0={v1}")),
            ("t twice", format!("t={T},t={T},v1={v1}")),
            ("empty t", format!("t=,v1={v1}")),
            ("signed t", format!("t=+{T},v1={v1}")),
            ("negative t", format!("t=-{T},v1={v1}")),
            ("fractional t", format!("t={T}.5,v1={v1}")),
            ("21-digit t", format!("t={},v1={v1}", "1".repeat(21))),
            ("t over u64", format!("t=18446744073709551616,v1={v1}")),
            ("non-hex v1", format!("t={T},v1={}g", &v1[..63])),
            ("short v1", format!("t={T},v1={}", &v1[..63])),
            ("long v1", format!("t={T},v1={v1}0")),
            ("empty v1", format!("t={T},v1=")),
            ("base64 v1", format!("t={T},v1={}==", &v1[..42])),
            ("space after comma", format!("t={T}, v1={v1}")),
            ("space inside", format!("t={T},v1 ={v1}")),
            ("tab inside", format!("t={T},\tv1={v1}")),
            ("semicolon separator", format!("t={T};v1={v1}")),
            ("item without =", format!("t={T},v1={v1},garbage")),
            ("empty item", format!("t={T},,v1={v1}")),
            ("trailing comma", format!("t={T},v1={v1},")),
            ("leading comma", format!(",t={T},v1={v1}")),
            ("empty key", format!("t={T},={v1},v1={v1}")),
            ("odd key", format!("t={T},v-1=x,v1={v1}")),
            ("uppercase T", format!("T={T},v1={v1}")),
            ("uppercase V1", format!("t={T},V1={v1}")),
        ];
        for (name, value) in cases {
            assert_eq!(
                parse(value.as_bytes()).err(),
                Some(SignatureError::Malformed),
                "{name}"
            );
        }
        Ok(())
    }

    #[test]
    fn header_longer_than_the_limit_is_malformed() -> TestResult {
        let value = format!("t={T},v1={}", valid_v1()?);
        assert!(ParsedHeader::parse(value.as_bytes(), value.len()).is_ok());
        assert_eq!(
            ParsedHeader::parse(value.as_bytes(), value.len() - 1).err(),
            Some(SignatureError::Malformed)
        );
        Ok(())
    }

    #[test]
    fn non_ascii_header_is_malformed() -> TestResult {
        let v1 = valid_v1()?;
        for bytes in [
            format!("t={T},v1={v1},x=\u{e9}").into_bytes(),
            [format!("t={T},v1={v1},x=").as_bytes(), &[0xff]].concat(),
        ] {
            assert_eq!(parse(&bytes).err(), Some(SignatureError::Malformed));
        }
        Ok(())
    }
}
