//! The OpenAI moderation shape: Qwen3Guard categories mapped onto OpenAI's keys.
//!
//! OpenAI's SDK expects every one of its category keys; those with a Qwen3Guard
//! counterpart take its flag and score, the others are `false` / `0.0`. Every Qwen3Guard
//! category is reported under its own name as well. Scores are the first-token
//! probabilities of [`qwen3guard::GenGuard::category_scores`].

use qwen3guard::gen::CategoryScore;
use serde_json::{Map, Value};

/// OpenAI's category keys and the Qwen3Guard category each takes its values from.
pub const OPENAI_CATEGORIES: [(&str, Option<&str>); 13] = [
    ("harassment", None),
    ("harassment/threatening", None),
    ("hate", None),
    ("hate/threatening", None),
    ("illicit", Some("Non-violent Illegal Acts")),
    ("illicit/violent", None),
    ("self-harm", Some("Suicide & Self-Harm")),
    ("self-harm/intent", None),
    ("self-harm/instructions", None),
    ("sexual", Some("Sexual Content or Sexual Acts")),
    ("sexual/minors", None),
    ("violence", Some("Violent")),
    ("violence/graphic", None),
];

/// `categories`, `category_scores` and `category_applied_input_types` of one result:
/// a category is flagged when the result is and Gen named it.
pub fn category_maps(flagged: bool, named: &[String], scores: &[CategoryScore]) -> [Value; 3] {
    let score_of = |name: &str| {
        scores
            .iter()
            .find(|s| s.category == name)
            .map_or(0.0, |s| s.probability)
    };
    let is_named = |name: &str| flagged && named.iter().any(|n| n == name);
    let mut flags = Map::new();
    let mut values = Map::new();
    let mut applied = Map::new();
    for (key, source) in OPENAI_CATEGORIES {
        flags.insert(key.into(), Value::Bool(source.is_some_and(is_named)));
        values.insert(key.into(), source.map_or(0.0, score_of).into());
        applied.insert(key.into(), Value::Array(vec!["text".into()]));
    }
    for score in scores {
        flags.insert(score.category.into(), Value::Bool(is_named(score.category)));
        values.insert(score.category.into(), score.probability.into());
        applied.insert(score.category.into(), Value::Array(vec!["text".into()]));
    }
    [
        Value::Object(flags),
        Value::Object(values),
        Value::Object(applied),
    ]
}
