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
    /// A `Sec-WebSocket-Protocol` entry `<prefix><key>`, for browsers, which cannot set
    /// headers on a WebSocket upgrade.
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
                CredentialSource::Header(name) => single_header(headers, name)?.map(Cow::Borrowed),
                CredentialSource::Bearer => bearer(headers)?.map(Cow::Borrowed),
                CredentialSource::Query(name) => query(uri, name)?,
                CredentialSource::WebSocketProtocol { prefix } => {
                    websocket_protocol(headers, prefix)?.map(Cow::Borrowed)
                }
            };
            if let Some(value) = value {
                if found.is_some() {
                    return Err(Rejection::MalformedCredentials(Malformed::Ambiguous));
                }
                found = Some(Credential { value, source });
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
}

impl Credential<'_> {
    /// The key's text.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.value
    }

    /// Where it was found (e.g. to echo the `Sec-WebSocket-Protocol` entry that carried it).
    #[must_use]
    pub fn source(&self) -> &CredentialSource {
        self.source
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

fn websocket_protocol<'a>(
    headers: &'a HeaderMap,
    prefix: &str,
) -> Result<Option<&'a str>, Rejection> {
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
                found = Some(key);
            }
        }
    }
    Ok(found)
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
