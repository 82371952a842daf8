//! Risk levels and the strict / loose policy modes, as the official evaluation uses them.
//!
//! These are the engine's own [`Severity`] and [`Mode`], re-exported: a level read from a
//! predictions file, one computed by a live session and one the scorer counts are the same
//! type, so the evaluation cannot drift from the engine (it had its own copies before).
//! What the official files add lives on the engine's types: the index map
//! `{0: Safe, 1: Unsafe, 2: Controversial}` ([`Severity::official_index`]) and exact,
//! case-sensitive names ([`Severity::from_str`](std::str::FromStr)).

pub use qwen3guard::policy::{Mode, Severity, SeverityProbs, UnknownSeverity};

/// One-letter names for tests that spell out level sequences (`[S, U, U, C]`).
#[cfg(test)]
pub(crate) mod test_levels {
    use super::Severity;

    pub(crate) const S: Severity = Severity::Safe;
    pub(crate) const U: Severity = Severity::Unsafe;
    pub(crate) const C: Severity = Severity::Controversial;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_serialize_as_their_names() {
        let text = serde_json::to_string(&Severity::ALL).unwrap();
        assert_eq!(text, r#"["Safe","Unsafe","Controversial"]"#);
        let back: Vec<Severity> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, Severity::ALL);
        assert!(serde_json::from_str::<Severity>("\"Harmful\"").is_err());
    }

    #[test]
    fn controversial_depends_on_mode() {
        assert!(Severity::Controversial.is_blocked(Mode::Strict));
        assert!(!Severity::Controversial.is_blocked(Mode::Loose));
        for mode in Mode::ALL {
            assert!(Severity::Unsafe.is_blocked(mode));
            assert!(!Severity::Safe.is_blocked(mode));
        }
    }
}
