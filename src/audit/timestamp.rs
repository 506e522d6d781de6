//! The serialized form of [`AuditEvent::timestamp`](super::AuditEvent::timestamp):
//! fixed-width RFC 3339 in UTC on output, any RFC 3339 on input.

use serde::{Deserialize, Deserializer, Serializer, de, ser};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// `2026-11-23T10:00:00.123456Z`; the caller converts to UTC first.
const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Formats `timestamp` in UTC, or fails if its year is outside 0000–9999.
pub(super) fn format(timestamp: OffsetDateTime) -> Result<String, time::error::Format> {
    let utc = timestamp.to_offset(UtcOffset::UTC);
    if !(0..=9999).contains(&utc.year()) {
        return Err(time::error::Format::InvalidComponent("year"));
    }
    utc.format(FORMAT)
}

pub(super) fn serialize<S: Serializer>(
    timestamp: &OffsetDateTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let text = format(*timestamp).map_err(ser::Error::custom)?;
    serializer.serialize_str(&text)
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<OffsetDateTime, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    OffsetDateTime::parse(&text, &Rfc3339)
        .map(|timestamp| timestamp.to_offset(UtcOffset::UTC))
        .map_err(de::Error::custom)
}
