//! Human durations in topology and config files: `500ms`, `30s`, `1m`, `2h`, `1d`.

use std::fmt;

/// Parses a duration such as `30s` or `5m` into milliseconds.
///
/// # Examples
/// ```
/// assert_eq!(eddy::topology::parse_duration_ms("5m"), Ok(300_000));
/// assert_eq!(eddy::topology::parse_duration_ms("250ms"), Ok(250));
/// assert!(eddy::topology::parse_duration_ms("5 minutes").is_err());
/// ```
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let allowed = "a whole number followed by ms, s, m, h or d (e.g. `30s`, `5m`)";
    let number: i64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: expected {allowed}"))?;
    let unit_ms = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "`{text}` has an unknown unit `{unit}`: expected {allowed}"
            ))
        }
    };
    number
        .checked_mul(unit_ms)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// Formats milliseconds back into the shortest exact human form (`300000` -> `5m`).
pub fn format_duration_ms(ms: i64) -> String {
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if ms != 0 && ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// A duration as written in a file, kept in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurationMs(pub i64);

impl fmt::Display for DurationMs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration_ms(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for DurationMs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration_ms(&text)
            .map(DurationMs)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_round_trips() {
        for (text, ms) in [
            ("1ms", 1),
            ("2s", 2_000),
            ("3m", 180_000),
            ("4h", 14_400_000),
            ("1d", 86_400_000),
        ] {
            assert_eq!(parse_duration_ms(text), Ok(ms));
            assert_eq!(format_duration_ms(ms), text);
        }
        assert_eq!(format_duration_ms(1500), "1500ms");
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        assert!(parse_duration_ms("10")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(parse_duration_ms("m")
            .unwrap_err()
            .contains("not a duration"));
        assert!(parse_duration_ms("5w").unwrap_err().contains("`w`"));
    }
}
