//! The serialized form of [`AuditEvent::timestamp`](super::AuditEvent::timestamp):
//! fixed-width RFC 3339 in UTC on output, any RFC 3339 on input.

use serde::{Deserialize, Deserializer, Serializer, de, ser};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// `2026-11-23T10:00:00.123456Z`; the caller converts to UTC first.
const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// The length of every timestamp [`format`] makes.
const LEN: usize = "2026-11-23T10:00:00.123456Z".len();

/// A formatted timestamp, kept on the stack: formatting one allocates nothing.
pub(super) struct Stamp([u8; LEN]);

impl Stamp {
    pub(super) fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        let text = std::str::from_utf8(&self.0);
        debug_assert!(
            text.is_ok(),
            "a timestamp holds ASCII digits and separators only"
        );
        text.unwrap_or_default()
    }
}

/// Formats `timestamp` in UTC, or fails if its year is outside 0000–9999.
pub(super) fn format(timestamp: OffsetDateTime) -> Result<Stamp, time::error::Format> {
    let utc = timestamp.to_offset(UtcOffset::UTC);
    if !(0..=9999).contains(&utc.year()) {
        return Err(time::error::Format::InvalidComponent("year"));
    }
    let mut stamp = Stamp([0; LEN]);
    let written = utc.format_into(&mut &mut stamp.0[..], FORMAT)?;
    if written != LEN {
        return Err(time::error::Format::InvalidComponent("timestamp"));
    }
    Ok(stamp)
}

pub(super) fn serialize<S: Serializer>(
    timestamp: &OffsetDateTime,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let stamp = format(*timestamp).map_err(ser::Error::custom)?;
    serializer.serialize_str(stamp.as_str())
}

pub(super) fn deserialize<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<OffsetDateTime, D::Error> {
    let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
    OffsetDateTime::parse(&text, &Rfc3339)
        .map(|timestamp| timestamp.to_offset(UtcOffset::UTC))
        .map_err(de::Error::custom)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::format;

    #[test]
    fn every_year_from_0_to_9999_fills_the_fixed_width() {
        for (timestamp, text) in [
            (
                datetime!(0000-01-01 0:00 UTC),
                "0000-01-01T00:00:00.000000Z",
            ),
            (
                datetime!(0042-03-04 05:06:07.8 UTC),
                "0042-03-04T05:06:07.800000Z",
            ),
            (
                datetime!(9999-12-31 23:59:59.999999 UTC),
                "9999-12-31T23:59:59.999999Z",
            ),
            (
                datetime!(2026-11-23 12:00:00 +02:00),
                "2026-11-23T10:00:00.000000Z",
            ),
        ] {
            let stamp = format(timestamp).map(|s| s.as_str().to_owned()).ok();
            assert_eq!(stamp.as_deref(), Some(text));
        }
        assert!(format(datetime!(-0001-12-31 0:00 UTC)).is_err());
    }
}
