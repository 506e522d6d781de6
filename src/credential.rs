//! Pulling a credential out of a request.
//!
//! The guard reads the key from the [`CredentialSource`]s it is configured with (by default
//! only the `X-API-Key` header) and refuses, before anything else happens:
//!
//! * no credential in any source: 401 `missing_credentials`;
//! * an empty credential, one longer than the cap (512 bytes by default), one with bytes
//!   outside visible ASCII, the same header or parameter given twice, credentials in two
//!   sources at once, or an `Authorization` header that is not `Bearer <key>`:
//!   401 `malformed_credentials`.
//!
//! Header names are case-insensitive, as the `http` crate gives them.

use std::borrow::Cow;

use http::{HeaderMap, HeaderName, Uri, header};

use crate::{Malformed, Rejection};

/// The default cap on a credential's length, in bytes.
pub const DEFAULT_MAX_CREDENTIAL_LEN: usize = 512;

/// The default header: `X-API-Key`.
pub const DEFAULT_HEADER: &str = "x-api-key";

/// The default prefix of a `Sec-WebSocket-Protocol` entry that carries a key.
pub const DEFAULT_WEBSOCKET_PROTOCOL_PREFIX: &str = "keygate.key.";

/// What follows the prefix of a `Sec-WebSocket-Protocol` entry that carries the base64url
/// encoding of a key (without padding): `keygate.key.b64.<base64url(key)>` by default.
pub const WEBSOCKET_PROTOCOL_BASE64URL_MARKER: &str = "b64.";

/// Where a credential may be found in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialSource {
    /// A header holding the key as it is (default: `X-API-Key`).
    Header(HeaderName),
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// A query parameter, e.g. `?token=<key>` (percent-decoded). Query strings end up in
    /// access logs: prefer headers where the client can set them.
    Query(String),
    /// A `Sec-WebSocket-Protocol` entry, for browsers, which cannot set headers on a
    /// WebSocket upgrade, in one of two forms:
    ///
    /// * `<prefix><key>` (`keygate.key.<key>`), for keys made only of characters a
    ///   subprotocol token allows: keygate's generated keys (`kg_…`), hex keys;
    /// * `<prefix>b64.<base64url(key)>` (`keygate.key.b64.<…>`,
    ///   [`WEBSOCKET_PROTOCOL_BASE64URL_MARKER`]): the key's base64url encoding without
    ///   padding (RFC 4648 §5), for any key, e.g. `openssl rand -base64 32` keys, whose
    ///   `/`, `+` and `=` a token cannot carry (clients refuse them).
    ///
    /// An encoded entry that does not decode is refused as 401 `malformed_credentials`
    /// ([`Malformed::BadEncoding`]); the decoded key then goes through the same checks as
    /// any credential (length cap, visible ASCII). A key that itself starts with `b64.`
    /// can be sent only in the encoded form. [`Credential::websocket_protocol_entry`] is
    /// the entry as sent, for the handshake's response to echo.
    ///
    /// ```
    /// use base64::Engine as _;
    ///
    /// let key = "q2V/n+0cM3nMn3WrWWMzRr4m5nN1QIk4YHd0Y2W9Zfk=";
    /// let entry = format!(
    ///     "keygate.key.b64.{}",
    ///     base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
    /// );
    /// assert_eq!(entry, "keygate.key.b64.cTJWL24rMGNNM25NbjNXcldXTXpScjRtNW5OMVFJazRZSGQwWTJXOVpmaz0");
    /// ```
    WebSocketProtocol {
        /// The prefix that marks the entry, e.g. `keygate.key.`.
        prefix: String,
    },
}

/// The configured sources and the length cap.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    pub(crate) sources: Vec<CredentialSource>,
    pub(crate) max_len: usize,
}

impl Credentials {
    /// The single credential of the request, or why there is none.
    pub(crate) fn extract<'a>(
        &'a self,
        headers: &'a HeaderMap,
        uri: &'a Uri,
    ) -> Result<Credential<'a>, Rejection> {
        let mut found: Option<Credential<'a>> = None;
        for source in &self.sources {
            let value = match source {
                CredentialSource::Header(name) => {
                    single_header(headers, name)?.map(|v| (Cow::Borrowed(v), None))
                }
                CredentialSource::Bearer => bearer(headers)?.map(|v| (Cow::Borrowed(v), None)),
                CredentialSource::Query(name) => query(uri, name)?.map(|v| (v, None)),
                CredentialSource::WebSocketProtocol { prefix } => {
                    websocket_protocol(headers, prefix, self.max_len)?
                        .map(|(value, entry)| (value, Some(entry)))
                }
            };
            if let Some((value, entry)) = value {
                if found.is_some() {
                    return Err(Rejection::MalformedCredentials(Malformed::Ambiguous));
                }
                found = Some(Credential {
                    value,
                    source,
                    entry,
                });
            }
        }
        let credential = found.ok_or(Rejection::MissingCredentials)?;
        self.check(credential.expose_secret())?;
        Ok(credential)
    }

    /// Empty, too long, or not visible ASCII.
    pub(crate) fn check(&self, value: &str) -> Result<(), Rejection> {
        check(value.as_bytes(), self.max_len)
    }
}

/// A credential pulled out of a request: the key's text and where it was found.
///
/// `Debug` never prints the key; its text is reachable only through
/// [`Credential::expose_secret`].
pub struct Credential<'a> {
    value: Cow<'a, str>,
    source: &'a CredentialSource,
    /// The `Sec-WebSocket-Protocol` entry that carried it.
    entry: Option<&'a str>,
}

impl Credential<'_> {
    /// The key's text.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.value
    }

    /// Where it was found.
    #[must_use]
    pub fn source(&self) -> &CredentialSource {
        self.source
    }

    /// The `Sec-WebSocket-Protocol` entry that carried the key, as the client sent it
    /// (`keygate.key.<key>` or `keygate.key.b64.<base64url(key)>`), for the handshake's
    /// response to echo; `None` if the key came from another source. It holds the key:
    /// never log it.
    #[must_use]
    pub fn websocket_protocol_entry(&self) -> Option<&str> {
        self.entry
    }
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("value", &"[REDACTED]")
            .field("source", &self.source)
            .finish()
    }
}

fn malformed(why: Malformed) -> Rejection {
    Rejection::MalformedCredentials(why)
}

/// Empty, too long, or not visible ASCII.
fn check(value: &[u8], max_len: usize) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(malformed(Malformed::Empty));
    }
    if value.len() > max_len {
        return Err(malformed(Malformed::TooLong));
    }
    if !crate::key::is_visible_ascii(value) {
        return Err(malformed(Malformed::InvalidBytes));
    }
    Ok(())
}

fn single_header<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a str>, Rejection> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(malformed(Malformed::Duplicated));
    }
    // Anything but visible ASCII is refused by `check` once the credential is out; here
    // only text is needed (UTF-8 validation is a quick word-wise scan for ASCII).
    std::str::from_utf8(value.as_bytes())
        .map(|v| Some(v.trim_matches([' ', '\t'])))
        .map_err(|_| malformed(Malformed::InvalidBytes))
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, Rejection> {
    let Some(value) = single_header(headers, &header::AUTHORIZATION)? else {
        return Ok(None);
    };
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed(Malformed::NotBearer));
    }
    Ok(Some(token.trim_start_matches(' ')))
}

fn query<'a>(uri: &'a Uri, name: &str) -> Result<Option<Cow<'a, str>>, Rejection> {
    let Some(query) = uri.query() else {
        return Ok(None);
    };
    let mut found = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == name {
            if found.is_some() {
                return Err(malformed(Malformed::Duplicated));
            }
            found = Some(value);
        }
    }
    Ok(found)
}

/// The key of the single entry `<prefix><key>` or `<prefix>b64.<base64url(key)>`, and
/// the entry.
fn websocket_protocol<'a>(
    headers: &'a HeaderMap,
    prefix: &str,
    max_len: usize,
) -> Result<Option<(Cow<'a, str>, &'a str)>, Rejection> {
    let mut found = None;
    for value in headers.get_all(header::SEC_WEBSOCKET_PROTOCOL) {
        let value = value
            .to_str()
            .map_err(|_| malformed(Malformed::InvalidBytes))?;
        for entry in value.split(',').map(str::trim) {
            if let Some(key) = entry.strip_prefix(prefix) {
                if found.is_some() {
                    return Err(malformed(Malformed::Duplicated));
                }
                found = Some((key, entry));
            }
        }
    }
    let Some((key, entry)) = found else {
        return Ok(None);
    };
    let Some(encoded) = key.strip_prefix(WEBSOCKET_PROTOCOL_BASE64URL_MARKER) else {
        return Ok(Some((Cow::Borrowed(key), entry)));
    };
    Ok(Some((
        Cow::Owned(decode_base64url(encoded, max_len)?),
        entry,
    )))
}

/// The key whose base64url encoding (without padding) is `encoded`; refused as too long
/// before decoding if it cannot decode to at most `max_len` bytes.
fn decode_base64url(encoded: &str, max_len: usize) -> Result<String, Rejection> {
    use base64::Engine as _;

    // Four characters per three bytes, the last group shortened without padding.
    let longest = max_len / 3 * 4 + [0, 2, 3][max_len % 3];
    if encoded.len() > longest {
        return Err(malformed(Malformed::TooLong));
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| malformed(Malformed::BadEncoding))?;
    // `check` refuses anything but visible ASCII once the credential is out.
    String::from_utf8(bytes).map_err(|_| malformed(Malformed::InvalidBytes))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn all_sources() -> Credentials {
        Credentials {
            sources: vec![
                CredentialSource::Header(HeaderName::from_static(DEFAULT_HEADER)),
                CredentialSource::Bearer,
                CredentialSource::Query("token".into()),
                CredentialSource::WebSocketProtocol {
                    prefix: DEFAULT_WEBSOCKET_PROTOCOL_PREFIX.into(),
                },
            ],
            max_len: 16,
        }
    }

    fn extract(headers: &[(&str, &[u8])], uri: &str) -> Result<String, Rejection> {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        let uri: Uri = uri.parse().unwrap();
        all_sources()
            .extract(&map, &uri)
            .map(|c| c.expose_secret().to_owned())
    }

    #[test]
    fn each_source() {
        assert_eq!(extract(&[("X-Api-Key", b"abc")], "/").unwrap(), "abc");
        assert_eq!(
            extract(&[("authorization", b"Bearer abc")], "/").unwrap(),
            "abc"
        );
        assert_eq!(
            extract(&[("authorization", b"bearer abc")], "/").unwrap(),
            "abc"
        );
        assert_eq!(extract(&[], "/ws?a=1&token=a%2Bb").unwrap(), "a+b");
        assert_eq!(
            extract(&[("sec-websocket-protocol", b"json, keygate.key.abc")], "/").unwrap(),
            "abc"
        );
    }

    /// `openssl rand -base64 32`-like: every character base64 may use, padding included.
    const OPENSSL_KEY: &str = "ab/+cd=";

    fn encoded(key: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
    }

    fn protocol(value: &str) -> Result<String, Rejection> {
        extract(&[("sec-websocket-protocol", value.as_bytes())], "/")
    }

    #[test]
    fn query_parameter_is_percent_decoded() {
        assert_eq!(
            extract(&[], "/ws?token=ab%2F%2Bcd%3D").unwrap(),
            OPENSSL_KEY
        );
        // A bare `+` in a query is a space (form encoding): refused as not visible ASCII.
        assert_eq!(
            extract(&[], "/ws?token=a+b"),
            Err(Rejection::MalformedCredentials(Malformed::InvalidBytes))
        );
    }

    #[test]
    fn websocket_protocol_carries_base64url_keys() {
        let entry = format!("keygate.key.b64.{}", encoded(OPENSSL_KEY.as_bytes()));
        assert!(!entry.contains(['/', '+', '=']), "{entry}");
        assert_eq!(protocol(&format!("json, {entry}")).unwrap(), OPENSSL_KEY);

        // The entry that carried the key, to echo in the handshake's response.
        let mut map = HeaderMap::new();
        map.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::try_from(format!("json, {entry}")).unwrap(),
        );
        let credentials = all_sources();
        let uri = Uri::from_static("/");
        let credential = credentials.extract(&map, &uri).unwrap();
        assert_eq!(credential.websocket_protocol_entry(), Some(entry.as_str()));
        // The plain form too.
        map.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("keygate.key.abc"),
        );
        let credential = credentials.extract(&map, &uri).unwrap();
        assert_eq!(
            credential.websocket_protocol_entry(),
            Some("keygate.key.abc")
        );
    }

    #[test]
    fn websocket_protocol_base64url_refusals() {
        let m = |why| Err(Rejection::MalformedCredentials(why));
        // Not base64url: standard alphabet, padding, stray characters, impossible length.
        assert_eq!(protocol("keygate.key.b64.ab/+"), m(Malformed::BadEncoding));
        assert_eq!(protocol("keygate.key.b64.YWI="), m(Malformed::BadEncoding));
        assert_eq!(protocol("keygate.key.b64.a!b"), m(Malformed::BadEncoding));
        assert_eq!(protocol("keygate.key.b64.a"), m(Malformed::BadEncoding));
        // The decoded key goes through the same checks as any credential.
        assert_eq!(protocol("keygate.key.b64."), m(Malformed::Empty));
        assert_eq!(
            protocol(&format!("keygate.key.b64.{}", encoded(&[b'a'; 17]))),
            m(Malformed::TooLong)
        );
        assert_eq!(
            protocol(&format!("keygate.key.b64.{}", encoded(&[b'a'; 16]))).unwrap(),
            "a".repeat(16)
        );
        // Far too long to be a key: refused without decoding it.
        assert_eq!(
            protocol(&format!("keygate.key.b64.{}", "A".repeat(10_000))),
            m(Malformed::TooLong)
        );
        assert_eq!(
            protocol(&format!("keygate.key.b64.{}", encoded(b"a b"))),
            m(Malformed::InvalidBytes)
        );
        assert_eq!(
            protocol(&format!("keygate.key.b64.{}", encoded(b"caf\xc3\xa9"))),
            m(Malformed::InvalidBytes)
        );
        assert_eq!(
            protocol(&format!("keygate.key.b64.{}", encoded(&[0xff, 0xfe]))),
            m(Malformed::InvalidBytes)
        );
        // One key, in either form, once.
        assert_eq!(
            protocol(&format!(
                "keygate.key.abc, keygate.key.b64.{}",
                encoded(b"abc")
            )),
            m(Malformed::Duplicated)
        );
    }

    #[test]
    fn refusals() {
        let m = |why| Err(Rejection::MalformedCredentials(why));
        assert_eq!(extract(&[], "/"), Err(Rejection::MissingCredentials));
        assert_eq!(extract(&[("x-api-key", b"")], "/"), m(Malformed::Empty));
        assert_eq!(extract(&[], "/?token="), m(Malformed::Empty));
        assert_eq!(
            extract(&[("x-api-key", b"a".repeat(17).as_slice())], "/"),
            m(Malformed::TooLong)
        );
        assert_eq!(
            extract(&[("x-api-key", b"a".repeat(16).as_slice())], "/")
                .unwrap()
                .len(),
            16
        );
        assert_eq!(
            extract(&[("x-api-key", b"caf\xc3\xa9")], "/"),
            m(Malformed::InvalidBytes)
        );
        assert_eq!(
            extract(&[("x-api-key", b"a b")], "/"),
            m(Malformed::InvalidBytes)
        );
        assert_eq!(extract(&[], "/?token=a%00b"), m(Malformed::InvalidBytes));
        assert_eq!(
            extract(&[("x-api-key", b"a"), ("X-API-KEY", b"a")], "/"),
            m(Malformed::Duplicated)
        );
        assert_eq!(extract(&[], "/?token=a&token=a"), m(Malformed::Duplicated));
        assert_eq!(
            extract(&[("x-api-key", b"a"), ("authorization", b"Bearer a")], "/"),
            m(Malformed::Ambiguous)
        );
        assert_eq!(
            extract(&[("x-api-key", b"a")], "/?token=a"),
            m(Malformed::Ambiguous)
        );
        assert_eq!(
            extract(&[("authorization", b"Basic abc")], "/"),
            m(Malformed::NotBearer)
        );
        assert_eq!(
            extract(&[("authorization", b"Bearer")], "/"),
            m(Malformed::Empty)
        );
        assert_eq!(
            extract(
                &[("sec-websocket-protocol", b"keygate.key.a, keygate.key.b")],
                "/"
            ),
            m(Malformed::Duplicated)
        );
    }
}
