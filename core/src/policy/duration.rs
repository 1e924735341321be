//! Durations as people write them in the policy and on the command line:
//! `30s`, `10m`, `1h`, `500ms`, or a bare number of seconds. One grammar for
//! both, so `verifiedTtl: 1h` and `--reload-interval 1h` read alike.

use std::fmt;
use std::time::Duration;

/// A duration read from `30s`, `10m`, `1h`, `500ms` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Parses `<number><unit>` with unit `ms`, `s`, `m` or `h` (no unit: seconds).
    pub fn parse(text: &str) -> Result<HumanDuration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: expected e.g. 30s, 10m, 1h"))?;
        let duration = match unit {
            "ms" => Duration::from_millis(value),
            "" | "s" => Duration::from_secs(value),
            "m" => Duration::from_secs(value.saturating_mul(60)),
            "h" => Duration::from_secs(value.saturating_mul(3600)),
            _ => {
                return Err(format!(
                    "invalid duration {text:?}: unit must be ms, s, m or h"
                ))
            }
        };
        Ok(HumanDuration(duration))
    }

    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 {
            write!(f, "{ms}ms")
        } else if ms % 3_600_000 == 0 && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms % 60_000 == 0 && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

/// Command-line flags parse through here (clap's default value parser).
impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        HumanDuration::parse(text)
    }
}

impl From<Duration> for HumanDuration {
    fn from(duration: Duration) -> Self {
        HumanDuration(duration)
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Seconds(s) => Ok(HumanDuration(Duration::from_secs(s))),
            Raw::Text(t) => HumanDuration::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

impl serde::Serialize for HumanDuration {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        for (text, secs_ms, printed) in [
            ("30s", 30_000, "30s"),
            ("10m", 600_000, "10m"),
            ("1h", 3_600_000, "1h"),
            ("500ms", 500, "500ms"),
            ("45", 45_000, "45s"),
            ("0s", 0, "0s"),
        ] {
            let d = HumanDuration::parse(text).unwrap();
            assert_eq!(d.0.as_millis(), secs_ms, "{text}");
            assert_eq!(d.to_string(), printed);
        }
        for bad in ["", "s", "10 minutes", "-1s", "1.5h", "10d"] {
            assert!(HumanDuration::parse(bad).is_err(), "{bad}");
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad}");
        }
        // What Display prints parses back to the same duration (clap shows
        // defaults through Display and parses them through FromStr).
        for ms in [1, 999, 1000, 8000, 60_000, 90_000, 3_600_000, 5_400_000] {
            let d = HumanDuration(Duration::from_millis(ms));
            assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d, "{d}");
        }
    }
}
