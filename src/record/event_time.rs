//! Event-time parsing for the formats topology files allow.

/// Parses an RFC 3339 timestamp (`2026-11-22T10:15:30.250Z`, any offset) into epoch milliseconds.
///
/// # Examples
/// ```
/// assert_eq!(eddy::record::parse_rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
/// assert_eq!(eddy::record::parse_rfc3339_ms("1970-01-01T01:00:00+01:00"), Some(0));
/// assert_eq!(eddy::record::parse_rfc3339_ms("yesterday"), None);
/// ```
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    crate::schema::TimeFormat::Rfc3339.from_str(text).ok()
}

/// Formats epoch milliseconds as RFC 3339 in UTC with millisecond precision.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_and_parses_back() {
        let ms = 1_795_340_430_250;
        assert_eq!(
            super::parse_rfc3339_ms(&super::format_rfc3339_ms(ms)),
            Some(ms)
        );
    }
}
