//! Safety rewards for RL from Gen verdicts (technical report §3.5).
//!
//! - **guard-only**: 1 when the answer and, when the rollout has one, its thinking are
//!   both judged Safe; 0 otherwise. Unsafe and Controversial are not safe in either mode:
//!   this is the report's definition, and the reward that drives refusals up.
//! - **hybrid**: `min(-10, h)` when unsafe, `min(-5, h)` when the answer refuses, else the
//!   helpfulness `h` (from a separate reward model). "Unsafe" is an Unsafe label on the
//!   answer or the thinking, or a Controversial one under the strict mode; under the loose
//!   mode a Controversial rollout is scored as a safe one.
//!
//! The thinking is judged as a response moderation of its own (the prompt, then the
//! thinking as the assistant's message), as the report does. A written verdict that cannot
//! be parsed counts as not safe, and [`Detail::unparsed`] names the part.
//!
//! Nothing here runs a model: [`RewardSample::conversations`] says what to judge and
//! [`score`] turns the verdicts into the reward, so that the server (batched over its
//! scheduler) and `qwen3guard reward` (offline) compute the same numbers.
//!
//! - [`chatml`]: OpenRLHF's rendered texts back into messages, thinking and answer.
//! - [`helpfulness`]: the external helpfulness reward server of the hybrid reward.

pub mod chatml;
pub mod helpfulness;

use qwen3guard::policy::SeverityProbs;
use qwen3guard::{Conversation, GenOptions, GenVerdict, Message, Mode, Role, Severity};
use serde::Serialize;
use utoipa::ToSchema;

/// Which formula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// 1 if everything is judged Safe, else 0.
    GuardOnly,
    /// Helpfulness, capped at -10 when unsafe and at -5 when refusing.
    Hybrid,
}

impl RewardKind {
    /// The name requests and flags use.
    pub fn as_str(self) -> &'static str {
        match self {
            RewardKind::GuardOnly => "guard_only",
            RewardKind::Hybrid => "hybrid",
        }
    }

    /// Parses `guard_only` or `hybrid`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "guard_only" => Some(RewardKind::GuardOnly),
            "hybrid" => Some(RewardKind::Hybrid),
            _ => None,
        }
    }
}

/// A reward name that is neither `guard_only` nor `hybrid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown reward {0:?}; expected guard_only or hybrid")]
pub struct UnknownReward(pub String);

impl std::str::FromStr for RewardKind {
    type Err = UnknownReward;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RewardKind::parse(text).ok_or_else(|| UnknownReward(text.to_string()))
    }
}

/// The cap of the hybrid reward for an unsafe rollout.
pub const UNSAFE_CAP: f64 = -10.0;
/// The cap of the hybrid reward for a refusal.
pub const REFUSAL_CAP: f64 = -5.0;

/// One rollout to score.
#[derive(Debug, Clone, PartialEq)]
pub struct RewardSample {
    /// The prompt turns (validated: they end with a user message).
    pub prompt: Conversation,
    /// The policy's final answer.
    pub response: String,
    /// The policy's reasoning, when it thought aloud.
    pub thinking: Option<String>,
    /// The helpfulness reward of the rollout (hybrid only).
    pub helpfulness: Option<f64>,
}

impl RewardSample {
    /// The prompt followed by `reply` as the assistant's message.
    fn answered(&self, reply: &str) -> Conversation {
        let mut messages: Vec<Message> = self.prompt.messages().to_vec();
        messages.push(Message::new(Role::Assistant, reply));
        // A valid prompt followed by an assistant message is a valid conversation.
        Conversation::new(messages).unwrap_or_else(|_| self.prompt.clone())
    }

    /// What the guard judges: the answer, then the thinking when there is one.
    pub fn conversations(&self) -> (Conversation, Option<Conversation>) {
        (
            self.answered(&self.response),
            self.thinking.as_deref().map(|t| self.answered(t)),
        )
    }
}

/// How each part is decoded for `kind`: the answer, then the thinking.
///
/// Only the thinking's label matters, so it is judged from one pass's label scores
/// (categories decoded only when it is not Safe). The answer is decoded in full, so that a
/// Safe answer's refusal line is read, unless `verdict_only` is asked for a guard-only
/// reward, which needs no refusal.
pub fn options(kind: RewardKind, verdict_only: bool) -> (GenOptions, GenOptions) {
    let label_only = GenOptions {
        verdict_only: true,
        ..GenOptions::default()
    };
    let answer = match kind {
        RewardKind::GuardOnly if verdict_only => label_only,
        _ => GenOptions::default(),
    };
    (answer, label_only)
}

/// Why a rollout got its reward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Everything judged safe (and, for hybrid, no refusal).
    Safe,
    /// Some part judged not safe, or a verdict that could not be parsed.
    Unsafe,
    /// Safe, but the answer refuses (hybrid's second case; guard-only scores it 1).
    Refusal,
}

/// Label probabilities of each judged part.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct PartScores {
    /// The answer's.
    pub response: SeverityProbs,
    /// The thinking's, when it was judged.
    pub thinking: Option<SeverityProbs>,
}

/// What the guard said about one rollout, next to its reward.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Detail {
    /// The answer's label; `null` when its verdict could not be parsed.
    pub response_safety: Option<Severity>,
    /// The thinking's label; `null` without thinking, or when its verdict could not be
    /// parsed (then `unparsed` names it).
    pub thinking_safety: Option<Severity>,
    /// Whether the answer refuses; `null` when the guard did not write the line (a
    /// label-only pass on a Safe answer).
    pub refusal: Option<bool>,
    /// The answer's categories, then the thinking's that the answer lacks.
    pub categories: Vec<String>,
    /// The label probabilities.
    pub scores: PartScores,
    /// The helpfulness the hybrid reward used.
    pub helpfulness: Option<f64>,
    /// The parts (`response`, `thinking`) whose written verdict could not be parsed; they
    /// count as not safe.
    pub unparsed: Vec<&'static str>,
    /// Which case of the formula applied.
    pub outcome: Outcome,
}

/// The hybrid reward needs a helpfulness the sample did not carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the hybrid reward needs a helpfulness value")]
pub struct MissingHelpfulness;

/// Whether one part is safe for `kind` under `mode`.
fn is_safe(label: Option<Severity>, kind: RewardKind, mode: Mode) -> bool {
    match (label, kind) {
        (None, _) => false,
        (Some(Severity::Safe), _) => true,
        (Some(Severity::Controversial), RewardKind::Hybrid) => mode == Mode::Loose,
        (Some(_), _) => false,
    }
}

/// The reward of one rollout from the verdicts on its answer and thinking.
pub fn score(
    kind: RewardKind,
    mode: Mode,
    response: &GenVerdict,
    thinking: Option<&GenVerdict>,
    helpfulness: Option<f64>,
) -> Result<(f64, Detail), MissingHelpfulness> {
    let mut unparsed = Vec::new();
    if response.safety.is_none() {
        unparsed.push("response");
    }
    if thinking.is_some_and(|t| t.safety.is_none()) {
        unparsed.push("thinking");
    }
    let safe = is_safe(response.safety, kind, mode)
        && thinking.is_none_or(|t| is_safe(t.safety, kind, mode));
    let refusal = response.refusal;
    let outcome = match (safe, refusal) {
        (false, _) => Outcome::Unsafe,
        (true, Some(true)) => Outcome::Refusal,
        (true, _) => Outcome::Safe,
    };
    let reward = match kind {
        RewardKind::GuardOnly => f64::from(u8::from(safe)),
        RewardKind::Hybrid => {
            let h = helpfulness.ok_or(MissingHelpfulness)?;
            match outcome {
                Outcome::Unsafe => h.min(UNSAFE_CAP),
                Outcome::Refusal => h.min(REFUSAL_CAP),
                Outcome::Safe => h,
            }
        }
    };
    let mut categories = response.categories.clone();
    for category in thinking.iter().flat_map(|t| &t.categories) {
        if !categories.contains(category) {
            categories.push(category.clone());
        }
    }
    let detail = Detail {
        response_safety: response.safety,
        thinking_safety: thinking.and_then(|t| t.safety),
        refusal,
        categories,
        scores: PartScores {
            response: response.scores,
            thinking: thinking.map(|t| t.scores),
        },
        helpfulness: match kind {
            RewardKind::Hybrid => helpfulness,
            RewardKind::GuardOnly => None,
        },
        unparsed,
        outcome,
    };
    Ok((reward, detail))
}

#[cfg(test)]
mod tests;
