//! Risk levels and the strict / loose policy modes, as the official evaluation uses them.
//!
//! The engine has its own severity type; this one is deliberately small and local so the
//! evaluation crate can score files without pulling in the model code.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

/// One of the three Qwen3Guard severity levels.
///
/// Ground-truth labels and per-position predictions share this type. In prediction files
/// a level is written either as its name or as its index in the official risk-level map
/// `{0: Safe, 1: Unsafe, 2: Controversial}` (the official script writes indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum RiskLevel {
    /// No policy violation.
    Safe,
    /// A clear policy violation; the positive class of every metric.
    Unsafe,
    /// Borderline content; counted as unsafe in strict mode and as safe in loose mode.
    Controversial,
}

impl RiskLevel {
    /// All levels, in the order of the official index map.
    pub const ALL: [RiskLevel; 3] = [RiskLevel::Safe, RiskLevel::Unsafe, RiskLevel::Controversial];

    /// The level's index in the official map `{0: Safe, 1: Unsafe, 2: Controversial}`.
    pub fn official_index(self) -> u8 {
        match self {
            RiskLevel::Safe => 0,
            RiskLevel::Unsafe => 1,
            RiskLevel::Controversial => 2,
        }
    }

    /// The level at `index` in the official map, or `None` outside 0..=2.
    pub fn from_official_index(index: u64) -> Option<RiskLevel> {
        match index {
            0 => Some(RiskLevel::Safe),
            1 => Some(RiskLevel::Unsafe),
            2 => Some(RiskLevel::Controversial),
            _ => None,
        }
    }

    /// The level's name as the model and the datasets spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Safe => "Safe",
            RiskLevel::Unsafe => "Unsafe",
            RiskLevel::Controversial => "Controversial",
        }
    }

    /// Whether this level counts as the positive (unsafe) class under `mode`.
    pub fn is_unsafe_in(self, mode: Mode) -> bool {
        match self {
            RiskLevel::Safe => false,
            RiskLevel::Unsafe => true,
            RiskLevel::Controversial => mode == Mode::Strict,
        }
    }
}

impl fmt::Display for RiskLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`RiskLevel::from_str`]: the text is not one of the three names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown risk level {0:?} (expected \"Safe\", \"Unsafe\" or \"Controversial\")")]
pub struct UnknownRiskLevel(pub String);

impl FromStr for RiskLevel {
    type Err = UnknownRiskLevel;

    /// Parses the exact, case-sensitive name. The official scripts compare strings exactly,
    /// so accepting `"unsafe"` here would silently disagree with them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "Safe" => Ok(RiskLevel::Safe),
            "Unsafe" => Ok(RiskLevel::Unsafe),
            "Controversial" => Ok(RiskLevel::Controversial),
            other => Err(UnknownRiskLevel(other.to_owned())),
        }
    }
}

impl<'de> Deserialize<'de> for RiskLevel {
    /// Accepts a name (`"Unsafe"`) or an official index (`1`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = RiskLevel;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"Safe\", \"Unsafe\", \"Controversial\" or an index 0, 1, 2")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RiskLevel, E> {
                v.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RiskLevel, E> {
                RiskLevel::from_official_index(v)
                    .ok_or_else(|| E::custom(format!("risk level index {v} is not 0, 1 or 2")))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RiskLevel, E> {
                u64::try_from(v)
                    .ok()
                    .and_then(RiskLevel::from_official_index)
                    .ok_or_else(|| E::custom(format!("risk level index {v} is not 0, 1 or 2")))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// How Controversial counts (paper, Tables 2-6: every benchmark is scored in both modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Controversial -> Unsafe.
    Strict,
    /// Controversial -> Safe.
    Loose,
}

impl Mode {
    /// Both modes, strict first (the order reports print them in).
    pub const ALL: [Mode; 2] = [Mode::Strict, Mode::Loose];

    /// `"strict"` or `"loose"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Loose => "loose",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One-letter names for tests that spell out level sequences (`[S, U, U, C]`).
#[cfg(test)]
pub(crate) mod test_levels {
    use super::RiskLevel;

    pub(crate) const S: RiskLevel = RiskLevel::Safe;
    pub(crate) const U: RiskLevel = RiskLevel::Unsafe;
    pub(crate) const C: RiskLevel = RiskLevel::Controversial;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_index_round_trips() {
        for level in RiskLevel::ALL {
            assert_eq!(
                RiskLevel::from_official_index(level.official_index().into()),
                Some(level)
            );
        }
        assert_eq!(RiskLevel::from_official_index(3), None);
    }

    #[test]
    fn names_are_case_sensitive() {
        assert_eq!(
            "Controversial".parse::<RiskLevel>(),
            Ok(RiskLevel::Controversial)
        );
        assert!("unsafe".parse::<RiskLevel>().is_err());
    }

    #[test]
    fn deserializes_names_and_indices() {
        let levels: Vec<RiskLevel> = serde_json::from_str(r#"[0, "Unsafe", 2, "Safe"]"#).unwrap();
        assert_eq!(
            levels,
            [
                RiskLevel::Safe,
                RiskLevel::Unsafe,
                RiskLevel::Controversial,
                RiskLevel::Safe
            ]
        );
        assert!(serde_json::from_str::<RiskLevel>("3").is_err());
        assert!(serde_json::from_str::<RiskLevel>("-1").is_err());
        assert!(serde_json::from_str::<RiskLevel>("\"Harmful\"").is_err());
    }

    #[test]
    fn controversial_depends_on_mode() {
        assert!(RiskLevel::Controversial.is_unsafe_in(Mode::Strict));
        assert!(!RiskLevel::Controversial.is_unsafe_in(Mode::Loose));
        for mode in Mode::ALL {
            assert!(RiskLevel::Unsafe.is_unsafe_in(mode));
            assert!(!RiskLevel::Safe.is_unsafe_in(mode));
        }
    }
}
