//! Event-time formats: the one rule a source declares for reading its time field.

/// The latest event time eddy accepts: 9999-12-31T23:59:59.999Z. Together with durations of at
/// most 100 years it keeps window arithmetic far from overflow.
pub const MAX_EVENT_TIME_MS: i64 = 253_402_300_799_999;

/// How a time field is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeFormat {
    /// An RFC 3339 string with 0 to 9 fractional digits and a zone (`Z` or `+03:00`): Go's `time.Time`.
    Rfc3339,
    EpochSeconds,
    EpochMillis,
    EpochMicros,
    EpochNanos,
}

/// Why a time value could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeParseError {
    #[error("is not an RFC 3339 timestamp (e.g. 2026-11-22T10:00:00.123456789+03:00)")]
    NotRfc3339,
    #[error("is not a {0} number")]
    NotANumber(&'static str),
    #[error("is out of the representable time range")]
    OutOfRange,
    #[error("is outside the event times eddy accepts (1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z)")]
    Unsupported,
}

impl TimeFormat {
    pub const ALL: [TimeFormat; 5] = [
        TimeFormat::Rfc3339,
        TimeFormat::EpochSeconds,
        TimeFormat::EpochMillis,
        TimeFormat::EpochMicros,
        TimeFormat::EpochNanos,
    ];
    pub const NAMES: &'static str =
        "`rfc3339`, `epoch_s`, `epoch_ms`, `epoch_us`, `epoch_ns` or `kafka`";

    pub fn name(self) -> &'static str {
        match self {
            TimeFormat::Rfc3339 => "rfc3339",
            TimeFormat::EpochSeconds => "epoch_s",
            TimeFormat::EpochMillis => "epoch_ms",
            TimeFormat::EpochMicros => "epoch_us",
            TimeFormat::EpochNanos => "epoch_ns",
        }
    }

    pub fn parse(name: &str) -> Option<TimeFormat> {
        TimeFormat::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The JSON type this format reads, for error messages.
    pub fn json_type(self) -> &'static str {
        match self {
            TimeFormat::Rfc3339 => "a string",
            _ => "a number",
        }
    }

    /// Units of this epoch format per millisecond, as (multiplier, divisor) to reach milliseconds.
    fn scale(self) -> (i64, i64) {
        match self {
            TimeFormat::EpochSeconds => (1000, 1),
            TimeFormat::EpochMillis => (1, 1),
            TimeFormat::EpochMicros => (1, 1_000),
            TimeFormat::EpochNanos => (1, 1_000_000),
            TimeFormat::Rfc3339 => (1, 1),
        }
    }

    /// Epoch milliseconds (rounded toward negative infinity) from an integer in this format.
    ///
    /// # Examples
    /// ```
    /// use eddy::schema::TimeFormat;
    /// assert_eq!(TimeFormat::EpochSeconds.from_int(1_795_000_000), Ok(1_795_000_000_000));
    /// assert_eq!(TimeFormat::EpochNanos.from_int(1_500_999_999), Ok(1_500));
    /// assert!(TimeFormat::EpochSeconds.from_int(i64::MAX).is_err());
    /// ```
    pub fn from_int(self, value: i64) -> Result<i64, TimeParseError> {
        if self == TimeFormat::Rfc3339 {
            return Err(TimeParseError::NotRfc3339);
        }
        let (mul, div) = self.scale();
        value
            .checked_mul(mul)
            .map(|v| v.div_euclid(div))
            .ok_or(TimeParseError::OutOfRange)
    }

    /// Epoch milliseconds from a JSON number with a fraction (`1795000000.25` seconds).
    pub fn from_float(self, value: f64) -> Result<i64, TimeParseError> {
        if self == TimeFormat::Rfc3339 {
            return Err(TimeParseError::NotRfc3339);
        }
        let (mul, div) = self.scale();
        let ms = (value * mul as f64 / div as f64).floor();
        // Beyond ±2^53 ms (±285,000 years) an f64 no longer holds whole milliseconds.
        if !ms.is_finite() || ms.abs() > 9_007_199_254_740_992.0 {
            return Err(TimeParseError::OutOfRange);
        }
        Ok(ms as i64)
    }

    /// Epoch milliseconds from an RFC 3339 string, any precision and offset.
    ///
    /// # Examples
    /// ```
    /// use eddy::schema::TimeFormat;
    /// let ms = TimeFormat::Rfc3339.from_str("2026-11-22T10:00:00.123456789+03:00").unwrap();
    /// assert_eq!(ms, TimeFormat::Rfc3339.from_str("2026-11-22T07:00:00.123Z").unwrap());
    /// assert_eq!(TimeFormat::Rfc3339.from_str("1969-12-31T23:59:59.9995Z"), Ok(-1));
    /// ```
    pub fn from_str(self, text: &str) -> Result<i64, TimeParseError> {
        if self != TimeFormat::Rfc3339 {
            return Err(TimeParseError::NotANumber(self.name()));
        }
        let parsed =
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| TimeParseError::NotRfc3339)?;
        i64::try_from(parsed.unix_timestamp_nanos().div_euclid(1_000_000))
            .map_err(|_| TimeParseError::OutOfRange)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_marshalling_round_trips_at_every_precision() {
        let base = TimeFormat::Rfc3339
            .from_str("2026-11-22T10:00:00Z")
            .unwrap();
        for (text, ms) in [
            ("2026-11-22T10:00:00Z", base),
            ("2026-11-22T10:00:00.1Z", base + 100),
            ("2026-11-22T10:00:00.123456Z", base + 123),
            ("2026-11-22T10:00:00.999999999Z", base + 999),
            ("2026-11-22T13:00:00.5+03:00", base + 500),
            ("2026-11-22T04:30:00-05:30", base),
        ] {
            assert_eq!(TimeFormat::Rfc3339.from_str(text), Ok(ms), "{text}");
        }
        assert!(TimeFormat::Rfc3339.from_str("2026-11-22 10:00:00").is_err());
        assert!(TimeFormat::Rfc3339.from_str("1795000000").is_err());
    }

    #[test]
    fn epoch_units_scale_to_milliseconds() {
        assert_eq!(TimeFormat::EpochMillis.from_int(-1), Ok(-1));
        assert_eq!(TimeFormat::EpochMicros.from_int(-1), Ok(-1));
        assert_eq!(TimeFormat::EpochMicros.from_int(2_999), Ok(2));
        assert_eq!(TimeFormat::EpochSeconds.from_float(1.25), Ok(1_250));
        assert_eq!(
            TimeFormat::EpochSeconds.from_int(i64::MAX / 10),
            Err(TimeParseError::OutOfRange)
        );
        assert_eq!(
            TimeFormat::EpochMillis.from_float(f64::INFINITY),
            Err(TimeParseError::OutOfRange)
        );
        assert!(TimeFormat::Rfc3339.from_int(5).is_err());
        assert!(TimeFormat::EpochMillis
            .from_str("2026-11-22T10:00:00Z")
            .is_err());
    }

    #[test]
    fn names_parse_back() {
        for format in TimeFormat::ALL {
            assert_eq!(TimeFormat::parse(format.name()), Some(format));
        }
    }
}
