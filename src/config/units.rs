//! Human-friendly units in the configuration: durations and byte sizes.
//!
//! Owns parsing `"90s"`, `"30m"`, `120` (seconds) and `"4MiB"`, `1048576` (bytes),
//! and printing them back in normalised form. It must never read files or the
//! environment: it only turns values into numbers.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// A duration as written in the config: integer seconds or a string with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

/// A byte size as written in the config: an integer or a string with a binary/decimal unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Longest duration accepted anywhere (about 317 years): long enough for any
/// timeout, short enough that adding it to the current time cannot overflow.
pub(super) const MAX_DURATION_SECS: u64 = 10_000_000_000;

/// Why a duration in the config could not be read; each names the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration (try \"90s\", \"30m\" or 120)")]
    NotANumber(String),
    #[error("`{text}` has an unknown duration unit `{unit}` (use ms, s, m, h or d)")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is too long a duration")]
    TooLong(String),
    #[error("`{0}` is finer than a millisecond; durations are whole milliseconds")]
    FinerThanAMillisecond(String),
}

/// Why a byte size in the config could not be read; each names the text as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("`{0}` is not a size (try \"4MiB\" or 1048576)")]
    NotANumber(String),
    #[error("`{text}` has an unknown size unit `{unit}` (use B, KiB, MiB, GiB, KB, MB or GB)")]
    UnknownUnit { text: String, unit: String },
    #[error("`{0}` is too large")]
    TooLarge(String),
}

/// Parses `"500ms"`, `"90s"`, `"30m"`, `"2h"`, `"1d"`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::NotANumber(text.to_owned()))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(DurationError::UnknownUnit {
                text: text.to_owned(),
                unit: other.to_owned(),
            });
        }
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds > MAX_DURATION_SECS as f64 {
        return Err(DurationError::TooLong(text.to_owned()));
    }
    let duration = Duration::from_millis((seconds * 1000.0).round() as u64);
    if (duration.as_secs_f64() - seconds).abs() > 1e-9 * seconds.max(1.0) {
        return Err(DurationError::FinerThanAMillisecond(text.to_owned()));
    }
    Ok(duration)
}

/// Parses `"4MiB"`, `"512KiB"`, `"16MB"`, `"1GiB"`, or a bare number of bytes.
pub(super) fn parse_size(text: &str) -> Result<u64, SizeError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| SizeError::NotANumber(text.to_owned()))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(SizeError::UnknownUnit {
                text: text.to_owned(),
                unit: other.to_owned(),
            });
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| SizeError::TooLarge(text.to_owned()))
}

/// Prints a duration the way a person would write it in the config.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if !millis.is_multiple_of(1000) {
        format!("{millis}ms")
    } else {
        let secs = duration.as_secs();
        match secs {
            s if s != 0 && s.is_multiple_of(3600) => format!("{}h", s / 3600),
            s if s != 0 && s.is_multiple_of(60) => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    }
}

/// Prints a size in the largest binary unit that divides it.
pub fn format_size(bytes: u64) -> String {
    match bytes {
        b if b != 0 && b.is_multiple_of(1 << 30) => format!("{}GiB", b >> 30),
        b if b != 0 && b.is_multiple_of(1 << 20) => format!("{}MiB", b >> 20),
        b if b != 0 && b.is_multiple_of(1 << 10) => format!("{}KiB", b >> 10),
        b => format!("{b}B"),
    }
}

impl<'de> serde::Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("integer seconds or a string like \"90s\" or \"30m\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                let v = u64::try_from(v).map_err(|_| E::custom("a duration cannot be negative"))?;
                self.visit_u64(v)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                if v > MAX_DURATION_SECS {
                    return Err(E::custom(format!("{v} seconds is too long a duration")));
                }
                Ok(ConfigDuration(Duration::from_secs(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(DurationVisitor)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer number of bytes or a string like \"4MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert!(parse_duration("ten seconds").is_err());
        assert_eq!(
            parse_duration("0.5ms"),
            Err(DurationError::FinerThanAMillisecond("0.5ms".into()))
        );
        assert!(parse_duration("1.0005s").is_err());
        assert!(parse_duration("1.5ms").is_err());
        assert_eq!(
            parse_duration("99999999999"),
            Err(DurationError::TooLong("99999999999".into()))
        );
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn sizes_parse_with_and_without_units() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("16MB"), Ok(16_000_000));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("4 megs").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
        assert_eq!(
            parse_size("17179869184GiB"),
            Err(SizeError::TooLarge("17179869184GiB".into()))
        );
    }

    #[test]
    fn errors_say_what_was_written_and_what_would_do() {
        assert_eq!(
            parse_duration(" 5 fortnights").unwrap_err().to_string(),
            "`5 fortnights` has an unknown duration unit `fortnights` (use ms, s, m, h or d)"
        );
        assert_eq!(
            parse_duration("soon").unwrap_err().to_string(),
            r#"`soon` is not a duration (try "90s", "30m" or 120)"#
        );
        assert_eq!(
            parse_size("4 megs").unwrap_err().to_string(),
            "`4 megs` has an unknown size unit `megs` (use B, KiB, MiB, GiB, KB, MB or GB)"
        );
        assert_eq!(
            parse_size("lots").unwrap_err().to_string(),
            r#"`lots` is not a size (try "4MiB" or 1048576)"#
        );
    }

    #[test]
    fn normalised_forms_round_trip() {
        for text in ["90s", "30m", "2h", "250ms", "0s"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(parse_duration(&format_duration(parsed)).unwrap(), parsed);
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_size(4 << 20), "4MiB");
        assert_eq!(format_size(1000), "1000B");
    }
}
