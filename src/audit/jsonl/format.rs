//! One line of the chain: how it is built from an event and how it is checked on its own.

use std::io::{self, Write};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{CHECKPOINT_ACTION, ChainErrorKind};

/// `prev` of the first line: 64 zeros.
pub(super) const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// What precedes the hash at the end of a line.
pub(super) const HASH_KEY: &[u8] = b",\"hash\":\"";
/// Hex digits in a SHA-256.
const HASH_HEX_LEN: usize = 64;
/// `,"hash":"<64 hex>"}`: 75 bytes.
pub(super) const SUFFIX_LEN: usize = HASH_KEY.len() + HASH_HEX_LEN + 2;
/// The longest audit line, in bytes, newline included: 1 MiB.
///
/// [`JsonLinesSink`](super::JsonLinesSink) refuses (and counts) an event whose line
/// would be longer, and [`verify_chain`](super::verify_chain) reports a longer line as
/// [`ChainErrorKind::TooLong`] without reading it into memory.
pub const MAX_LINE_LEN: usize = 1024 * 1024;

/// Builds line `seq` from the event's serialized `fields` (a JSON object) and the
/// previous line's hash. Returns the line, newline included, and its hash.
pub(super) fn encode_line(seq: u64, prev: &str, fields: &[u8]) -> io::Result<(Vec<u8>, String)> {
    let fields = fields
        .strip_prefix(b"{")
        .and_then(|rest| rest.strip_suffix(b"}"))
        .filter(|inner| !inner.is_empty())
        .ok_or_else(|| io::Error::other("audit event did not serialize to a JSON object"))?;

    let mut line = Vec::with_capacity(fields.len() + 200);
    write!(line, "{{\"seq\":{seq},\"prev\":\"{prev}\",")?;
    line.extend_from_slice(fields);
    line.push(b'}');
    let hash = hex::encode(Sha256::digest(&line));

    line.pop();
    line.extend_from_slice(HASH_KEY);
    line.extend_from_slice(hash.as_bytes());
    line.extend_from_slice(b"\"}\n");
    Ok((line, hash))
}

/// The parts of a line the chain is made of.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) seq: u64,
    pub(super) prev: String,
    pub(super) hash: String,
    /// The `target` of a checkpoint record (its MAC); `None` for other records.
    pub(super) checkpoint: Option<String>,
}

/// Checks one line (without its newline) on its own: its shape and its hash.
pub(super) fn parse_line(line: &[u8]) -> Result<Link, ChainErrorKind> {
    use ChainErrorKind::{HashMismatch, Unparseable};

    #[derive(Deserialize)]
    struct Fields {
        seq: u64,
        prev: String,
        hash: String,
        #[serde(default)]
        action: Option<String>,
        #[serde(default)]
        target: Option<String>,
    }

    let split = line.len().checked_sub(SUFFIX_LEN).ok_or(Unparseable)?;
    let (content, suffix) = line.split_at(split);
    let hash = suffix
        .strip_prefix(HASH_KEY)
        .and_then(|rest| rest.strip_suffix(b"\"}"))
        .filter(|hex| is_lower_hex(hex))
        .ok_or(Unparseable)?;

    let fields: Fields = serde_json::from_slice(line).map_err(|_| Unparseable)?;
    if fields.hash.as_bytes() != hash || !is_lower_hex(fields.prev.as_bytes()) {
        return Err(Unparseable);
    }

    let mut hasher = Sha256::new();
    hasher.update(content);
    hasher.update(b"}");
    if hex::encode(hasher.finalize()).as_bytes() != hash {
        return Err(HashMismatch);
    }
    let checkpoint = if fields.action.as_deref() == Some(CHECKPOINT_ACTION) {
        Some(fields.target.unwrap_or_default())
    } else {
        None
    };
    Ok(Link {
        seq: fields.seq,
        prev: fields.prev,
        hash: fields.hash,
        checkpoint,
    })
}

/// 64 lowercase hex digits.
fn is_lower_hex(text: &[u8]) -> bool {
    text.len() == HASH_HEX_LEN && text.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)] // tests may panic
mod tests {
    use super::super::testing::{chain_of, event};
    use super::*;
    use crate::audit::AuditEvent;

    #[test]
    fn line_layout_matches_the_documented_format() {
        let (_dir, lines) = chain_of(2);
        let first = &lines[0];
        assert!(
            first.starts_with(&format!(
                "{{\"seq\":1,\"prev\":\"{GENESIS}\",\"timestamp\":\""
            )),
            "{first}"
        );
        assert!(first.contains(r#""key_id":"AbCdEf012345""#), "{first}");

        // hash = SHA-256 of the line without `,"hash":"…"`, closed with `}`.
        let (content, suffix) = first.split_at(first.len() - SUFFIX_LEN);
        let hash = &suffix[HASH_KEY.len()..HASH_KEY.len() + 64];
        assert_eq!(suffix, format!(",\"hash\":\"{hash}\"}}"));
        assert_eq!(hex::encode(Sha256::digest(format!("{content}}}"))), hash);

        // The rest of the line is the event, as serialized on its own.
        let event: AuditEvent = serde_json::from_str(first).expect("line is an event");
        assert_eq!(event.action, "POST /coordinator/jobs/0");

        assert!(
            lines[1].starts_with(&format!("{{\"seq\":2,\"prev\":\"{hash}\",")),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn encoded_lines_parse_back_and_an_edit_is_a_hash_mismatch() {
        let fields = serde_json::to_vec(&event(0)).expect("serialize");
        let (line, hash) = encode_line(7, GENESIS, &fields).expect("line");
        let text = line.strip_suffix(b"\n").expect("newline");
        let link = parse_line(text).expect("valid line");
        assert_eq!(
            (link.seq, link.prev.as_str(), link.hash),
            (7, GENESIS, hash)
        );

        let edited = String::from_utf8(text.to_vec())
            .expect("utf-8")
            .replace("admitted", "refused");
        assert!(matches!(
            parse_line(edited.as_bytes()),
            Err(ChainErrorKind::HashMismatch)
        ));
        assert!(matches!(
            encode_line(1, GENESIS, b"[1]"),
            Err(err) if err.kind() == io::ErrorKind::Other
        ));
    }
}
