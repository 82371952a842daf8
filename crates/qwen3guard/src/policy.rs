//! The moderation policy: severities, strict/loose modes, categories, and the parser of
//! Gen's written verdict.
//!
//! These are the only severity, mode and probability types of the workspace: the
//! evaluation crate scores files with them too, so a level means the same thing in a live
//! verdict and in a published number.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How harmful something is judged to be.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Severity {
    /// Nothing prohibited.
    Safe,
    /// Could become harmful depending on context; each deployment decides (see [`Mode`]).
    Controversial,
    /// Prohibited content.
    Unsafe,
}

impl Severity {
    /// All levels, in the order of the official evaluation's index map
    /// `{0: Safe, 1: Unsafe, 2: Controversial}`.
    pub const ALL: [Severity; 3] = [Severity::Safe, Severity::Unsafe, Severity::Controversial];

    /// The level's index in the official map `{0: Safe, 1: Unsafe, 2: Controversial}` (the
    /// official scripts write prediction files with these indices).
    pub fn official_index(self) -> u8 {
        match self {
            Severity::Safe => 0,
            Severity::Unsafe => 1,
            Severity::Controversial => 2,
        }
    }

    /// The level at `index` in the official map, or `None` outside 0..=2.
    pub fn from_official_index(index: u64) -> Option<Self> {
        Self::ALL.get(usize::try_from(index).ok()?).copied()
    }

    /// Parses the label as the models write it.
    pub fn from_label(label: &str) -> Option<Self> {
        match label {
            "Safe" => Some(Severity::Safe),
            "Unsafe" => Some(Severity::Unsafe),
            "Controversial" => Some(Severity::Controversial),
            _ => None,
        }
    }

    /// The label as the models write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Safe => "Safe",
            Severity::Controversial => "Controversial",
            Severity::Unsafe => "Unsafe",
        }
    }

    /// Whether a deployment in `mode` must block it.
    pub fn is_blocked(self, mode: Mode) -> bool {
        matches!(
            (self, mode),
            (Severity::Unsafe, _) | (Severity::Controversial, Mode::Strict)
        )
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of [`Severity::from_str`]: the text is not one of the three names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown risk level {0:?} (expected \"Safe\", \"Unsafe\" or \"Controversial\")")]
pub struct UnknownSeverity(pub String);

impl FromStr for Severity {
    type Err = UnknownSeverity;

    /// The exact, case-sensitive name ([`Severity::from_label`]): the official scripts
    /// compare strings exactly, so accepting `"unsafe"` would silently disagree with them.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::from_label(s).ok_or_else(|| UnknownSeverity(s.to_owned()))
    }
}

/// Probabilities of the three severities (JSON keys `Safe`, `Unsafe`, `Controversial`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeverityProbs {
    /// P(Safe).
    #[serde(rename = "Safe")]
    pub safe: f32,
    /// P(Unsafe).
    #[serde(rename = "Unsafe")]
    pub unsafe_: f32,
    /// P(Controversial).
    #[serde(rename = "Controversial")]
    pub controversial: f32,
}

impl SeverityProbs {
    /// A softmax over the logits of `Safe`, `Unsafe` and `Controversial`, in that order
    /// (computed in f64).
    pub fn from_logits(logits: [f32; 3]) -> Self {
        let max = logits.iter().copied().fold(f32::MIN, f32::max);
        let e = logits.map(|x| ((x - max) as f64).exp());
        let sum: f64 = e.iter().sum();
        SeverityProbs {
            safe: (e[0] / sum) as f32,
            unsafe_: (e[1] / sum) as f32,
            controversial: (e[2] / sum) as f32,
        }
    }

    /// The probability of `severity`.
    pub fn of(&self, severity: Severity) -> f32 {
        match severity {
            Severity::Safe => self.safe,
            Severity::Unsafe => self.unsafe_,
            Severity::Controversial => self.controversial,
        }
    }

    /// The most probable severity (Unsafe, then Controversial, on ties).
    pub fn best(&self) -> Severity {
        if self.unsafe_ >= self.safe && self.unsafe_ >= self.controversial {
            Severity::Unsafe
        } else if self.controversial > self.safe {
            Severity::Controversial
        } else {
            Severity::Safe
        }
    }
}

/// What Controversial means for a deployment (paper, Tables 2-6).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Controversial counts as Unsafe.
    #[default]
    Strict,
    /// Controversial counts as Safe.
    Loose,
}

impl Mode {
    /// Both modes, strict first (the order reports print them in).
    pub const ALL: [Mode; 2] = [Mode::Strict, Mode::Loose];

    /// `"strict"` or `"loose"` (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::Loose => "loose",
        }
    }
}

/// The error of [`Mode::from_str`]: neither `strict` nor `loose`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown mode {0:?} (expected \"strict\" or \"loose\")")]
pub struct UnknownMode(pub String);

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> std::result::Result<Self, UnknownMode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The harm categories in the order the Gen prompt lists them. `Jailbreak` applies to
/// prompts only.
pub const CATEGORIES: [&str; 9] = [
    "Violent",
    "Non-violent Illegal Acts",
    "Sexual Content or Sexual Acts",
    "PII",
    "Suicide & Self-Harm",
    "Unethical Acts",
    "Politically Sensitive Topics",
    "Copyright Violation",
    "Jailbreak",
];

/// What a Gen output says, as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ParsedVerdict {
    /// `None` when no `Safety:` line names a known level.
    pub safety: Option<Severity>,
    /// Categories named on the `Categories:` line, in order, without duplicates.
    pub categories: Vec<String>,
    /// `Refusal: Yes/No` for responses; `None` when absent.
    pub refusal: Option<bool>,
}

/// Parses Gen's output text (`Safety: ...`, `Categories: ...`, `Refusal: ...`).
///
/// Categories are matched as whole names, longest first at each position, so that
/// "Non-violent Illegal Acts" is never also read as "Violent".
pub fn parse_gen_output(text: &str) -> ParsedVerdict {
    let mut verdict = ParsedVerdict::default();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Safety:") {
            if verdict.safety.is_none() {
                verdict.safety = Severity::from_label(rest.trim());
            }
        } else if let Some(rest) = line.strip_prefix("Categories:") {
            if verdict.categories.is_empty() {
                verdict.categories = find_categories(rest);
            }
        } else if let Some(rest) = line.strip_prefix("Refusal:") {
            verdict.refusal = match rest.trim() {
                "Yes" => Some(true),
                "No" => Some(false),
                _ => verdict.refusal,
            };
        }
    }
    verdict
}

fn find_categories(line: &str) -> Vec<String> {
    let mut by_length = CATEGORIES;
    by_length.sort_by_key(|c| std::cmp::Reverse(c.len()));
    let mut found: Vec<String> = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        match by_length.iter().find(|c| rest.starts_with(*c)) {
            Some(c) => {
                if !found.iter().any(|f| f == c) {
                    found.push((*c).to_string());
                }
                rest = &rest[c.len()..];
            }
            None => {
                let step = rest.chars().next().map_or(1, char::len_utf8);
                rest = &rest[step..];
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prompt_verdict() {
        let v = parse_gen_output("Safety: Unsafe\nCategories: Violent");
        assert_eq!(v.safety, Some(Severity::Unsafe));
        assert_eq!(v.categories, vec!["Violent"]);
        assert_eq!(v.refusal, None);
    }

    #[test]
    fn non_violent_is_not_violent() {
        let v = parse_gen_output("Safety: Unsafe\nCategories: Non-violent Illegal Acts");
        assert_eq!(v.categories, vec!["Non-violent Illegal Acts"]);
        let v =
            parse_gen_output("Safety: Unsafe\nCategories: Non-violent Illegal Acts, Violent, PII");
        assert_eq!(
            v.categories,
            vec!["Non-violent Illegal Acts", "Violent", "PII"]
        );
    }

    #[test]
    fn parses_response_verdict_with_refusal() {
        let v = parse_gen_output("Safety: Safe\nCategories: None\nRefusal: Yes");
        assert_eq!(v.safety, Some(Severity::Safe));
        assert!(v.categories.is_empty());
        assert_eq!(v.refusal, Some(true));
        let v = parse_gen_output(
            "Safety: Controversial\nCategories: Politically Sensitive Topics\nRefusal: No",
        );
        assert_eq!(v.safety, Some(Severity::Controversial));
        assert_eq!(v.refusal, Some(false));
    }

    #[test]
    fn unparseable_output_has_no_safety() {
        assert_eq!(parse_gen_output("I cannot help"), ParsedVerdict::default());
        assert_eq!(parse_gen_output("Safety: Maybe").safety, None);
    }

    #[test]
    fn official_index_round_trips_and_names_are_exact() {
        for level in Severity::ALL {
            let index = level.official_index().into();
            assert_eq!(Severity::from_official_index(index), Some(level));
            assert_eq!(level.to_string().parse::<Severity>(), Ok(level));
        }
        assert_eq!(Severity::from_official_index(3), None);
        assert_eq!(Severity::Unsafe.official_index(), 1);
        assert!("unsafe".parse::<Severity>().is_err());
        assert_eq!(Mode::Loose.to_string(), "loose");
    }

    #[test]
    fn modes_decide_controversial() {
        assert!(Severity::Controversial.is_blocked(Mode::Strict));
        assert!(!Severity::Controversial.is_blocked(Mode::Loose));
        assert!(Severity::Unsafe.is_blocked(Mode::Loose));
        assert!(!Severity::Safe.is_blocked(Mode::Strict));
    }
}
