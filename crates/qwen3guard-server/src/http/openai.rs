//! The OpenAI moderation shape: Qwen3Guard categories mapped onto OpenAI's keys.
//!
//! OpenAI's SDK expects every one of its category keys; those with a Qwen3Guard
//! counterpart take its flag and score, the others are `false` / `0.0`. Every Qwen3Guard
//! category is reported under its own name as well. Scores are the first-token
//! probabilities of [`qwen3guard::GenGuard::category_scores`].

use std::collections::BTreeMap;

use qwen3guard::gen::CategoryScore;
use qwen3guard::GenVerdict;
use serde::Serialize;
use utoipa::ToSchema;

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

/// The body of a `/v1/moderations` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Moderation<'a> {
    /// `modr-N`.
    pub id: String,
    /// The model the client named, or the loaded Gen model's name.
    pub model: String,
    /// One per input, in order.
    pub results: Vec<ModerationResult<'a>>,
}

/// One result of `/v1/moderations`, typed so that scores are written as the CLI writes
/// them (an f32 in its shortest form), not widened to a longer f64 text.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModerationResult<'a> {
    /// Whether the input is blocked under the server's mode.
    pub flagged: bool,
    /// Per category: flagged and named by Gen.
    #[schema(value_type = BTreeMap<String, bool>)]
    pub categories: BTreeMap<&'static str, bool>,
    /// Per category: its probability.
    #[schema(value_type = BTreeMap<String, f32>)]
    pub category_scores: BTreeMap<&'static str, f32>,
    /// Per category: the input types it was judged on (always text).
    #[schema(value_type = BTreeMap<String, Vec<String>>)]
    pub category_applied_input_types: BTreeMap<&'static str, [&'static str; 1]>,
    /// The native verdict, as `/v1/guard` returns it.
    pub qwen3guard: Native<'a>,
}

/// A Gen verdict with the policy's decision beside its own fields.
#[derive(Debug, Serialize, ToSchema)]
pub struct Native<'a> {
    /// The library's verdict, field for field.
    #[serde(flatten)]
    pub verdict: &'a GenVerdict,
    /// Whether it is blocked under the request's mode.
    pub flagged: bool,
}

impl<'a> ModerationResult<'a> {
    /// The result for `native`, whose category scores are `scores`: a category is flagged
    /// when the result is and Gen named it.
    pub fn new(native: Native<'a>, scores: &[CategoryScore]) -> Self {
        let flagged = native.flagged;
        let named = &native.verdict.categories;
        let score_of = |name: &str| {
            scores
                .iter()
                .find(|s| s.category == name)
                .map_or(0.0, |s| s.probability)
        };
        let is_named = |name: &str| flagged && named.iter().any(|n| n == name);
        let mut categories = BTreeMap::new();
        let mut category_scores = BTreeMap::new();
        let mut category_applied_input_types = BTreeMap::new();
        let openai = OPENAI_CATEGORIES
            .iter()
            .map(|(key, source)| (*key, *source));
        let own = scores.iter().map(|s| (s.category, Some(s.category)));
        for (key, source) in openai.chain(own) {
            categories.insert(key, source.is_some_and(is_named));
            category_scores.insert(key, source.map_or(0.0, score_of));
            category_applied_input_types.insert(key, ["text"]);
        }
        ModerationResult {
            flagged,
            categories,
            category_scores,
            category_applied_input_types,
            qwen3guard: native,
        }
    }
}
