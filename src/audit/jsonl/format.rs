//! One line of the chain: how it is built from an event and how it is checked on its own.

use std::io;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{CHECKPOINT_ACTION, ChainErrorKind};
use crate::audit::AuditEvent;

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

/// The `hash` of a line: 64 lowercase hex digits.
pub(super) type HexHash = [u8; HASH_HEX_LEN];

/// [`GENESIS`] as a [`HexHash`].
pub(super) const GENESIS_HASH: HexHash = [b'0'; HASH_HEX_LEN];

/// Appends line `seq` to `buf`, newline included, after the line whose hash is `prev`,
/// and returns its hash. `write_object` writes the record's fields as one non-empty JSON
/// object (an event serialized straight into `buf`, or bytes serialized before): its
/// opening `{` becomes the `,` after `prev`, so that nothing is copied or re-encoded.
///
/// On error `buf` is left as it was: the object is not a non-empty JSON object, it does
/// not serialize, or the line would be longer than [`MAX_LINE_LEN`].
pub(super) fn push_line(
    buf: &mut Vec<u8>,
    seq: u64,
    prev: &HexHash,
    write_object: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
) -> io::Result<HexHash> {
    let start = buf.len();
    let pushed = push_line_at(buf, start, seq, prev, write_object);
    if pushed.is_err() {
        buf.truncate(start);
    }
    pushed
}

fn push_line_at(
    buf: &mut Vec<u8>,
    start: usize,
    seq: u64,
    prev: &HexHash,
    write_object: impl FnOnce(&mut Vec<u8>) -> io::Result<()>,
) -> io::Result<HexHash> {
    buf.extend_from_slice(b"{\"seq\":");
    buf.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    buf.extend_from_slice(b",\"prev\":\"");
    buf.extend_from_slice(prev);
    buf.push(b'"');
    let object = buf.len();
    write_object(buf)?;
    let fields = &mut buf[object..];
    if fields.len() < 3 || fields[0] != b'{' || fields[fields.len() - 1] != b'}' {
        return Err(io::Error::other(
            "audit event did not serialize to a JSON object",
        ));
    }
    fields[0] = b',';
    // The line with its suffix `,"hash":"<64 hex>"}` instead of `}`, and a newline.
    if buf.len() - start - 1 + SUFFIX_LEN + 1 > MAX_LINE_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "audit line longer than 1 MiB",
        ));
    }
    let mut hash = [0_u8; HASH_HEX_LEN];
    hex::encode_to_slice(Sha256::digest(&buf[start..]), &mut hash)
        .map_err(|_| io::Error::other("hex encoding of a SHA-256 failed"))?;
    buf.pop();
    buf.extend_from_slice(HASH_KEY);
    buf.extend_from_slice(&hash);
    buf.extend_from_slice(b"\"}\n");
    Ok(hash)
}

/// Appends line `seq` for `event`, serialized straight into `buf` (no copy of its
/// strings); see [`push_line`].
pub(super) fn push_event_line(
    buf: &mut Vec<u8>,
    seq: u64,
    prev: &HexHash,
    event: &AuditEvent,
) -> io::Result<HexHash> {
    push_line(buf, seq, prev, |buf| {
        serde_json::to_writer(buf, event).map_err(io::Error::from)
    })
}

/// Builds line `seq` from the event's serialized `fields` (a JSON object) and the
/// previous line's hash. Returns the line, newline included, and its hash.
#[cfg(test)]
pub(super) fn encode_line(seq: u64, prev: &str, fields: &[u8]) -> io::Result<(Vec<u8>, String)> {
    let prev: HexHash = prev
        .as_bytes()
        .try_into()
        .map_err(|_| io::Error::other("prev is not 64 hex digits"))?;
    let mut line = Vec::new();
    let hash = push_line(&mut line, seq, &prev, |buf| {
        buf.extend_from_slice(fields);
        Ok(())
    })?;
    Ok((line, String::from_utf8_lossy(&hash).into_owned()))
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
