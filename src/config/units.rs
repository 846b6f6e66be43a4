//! Durations (`250ms`, `30s`) and sizes (`64KiB`, `1048576`) as written in config files.

use std::time::Duration;

/// Parses a duration such as `250ms`, `30s`, `5m` or `1h`.
///
/// A unit is required so that `timeout: 30` cannot silently mean 30 ms or 30 s.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("duration \"{text}\" needs a unit: ms, s, m or h (e.g. \"{text}s\")")
    })?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "duration \"{text}\" must start with a whole number, e.g. \"30s\""
        ));
    }
    let number: u64 = number
        .parse()
        .map_err(|_| format!("duration \"{text}\" is too large"))?;
    let millis_per_unit = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "duration \"{text}\" has unknown unit \"{unit}\": use ms, s, m or h"
            ));
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration \"{text}\" is too large"))
}

/// Formats a duration the way config files write it, choosing the largest exact unit.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

/// Parses a byte size: a plain number of bytes or a number with `KiB`, `MiB` or `GiB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "size \"{text}\" must start with a whole number, e.g. \"64KiB\""
        ));
    }
    let number: u64 = number
        .parse()
        .map_err(|_| format!("size \"{text}\" is too large"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "size \"{text}\" has unknown unit \"{other}\": use B, KiB, MiB or GiB"
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size \"{text}\" is too large"))
}

/// Formats a size as config files write it, in the largest unit that divides it.
pub fn format_size(bytes: u64) -> String {
    for (unit, multiplier) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes != 0 && bytes.is_multiple_of(multiplier) {
            return format!("{}{unit}", bytes / multiplier);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(
            parse_duration("30"),
            Err("duration \"30\" needs a unit: ms, s, m or h (e.g. \"30s\")".to_owned())
        );
        assert_eq!(
            parse_duration("3 weeks"),
            Err("duration \"3 weeks\" has unknown unit \" weeks\": use ms, s, m or h".to_owned())
        );
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
    }

    #[test]
    fn durations_round_trip() {
        for text in ["250ms", "30s", "5m", "1h", "1500ms", "0s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("10 MiB"), Ok(10 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert!(parse_size("10MB").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }

    #[test]
    fn sizes_round_trip() {
        for text in ["0", "1000", "64KiB", "1536KiB", "16MiB", "2GiB"] {
            assert_eq!(format_size(parse_size(text).unwrap()), text);
        }
    }
}
