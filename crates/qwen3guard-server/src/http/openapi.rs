//! `GET /openapi.json`: the API described from the types the server serializes.
//!
//! Answers are described by their own types (the engine's verdicts derive their schemas
//! under its `openapi` feature). Request bodies are validated by hand
//! ([`crate::validation`], for messages that name the field at fault), so they are
//! described by the body types here, whose field names a test checks against the
//! validator's lists. `docs/openapi.json` is this document, checked in; a test fails
//! when they differ.

use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

use super::handlers;
use super::openai::{Moderation, ModerationResult, Native};
use super::reward::{self, OpenRlhfRewards, Rewards};
use super::ws;
use crate::reward::{Detail, Outcome, PartScores, RewardKind};
use crate::scheduler::{Appended, Opened, SessionView};

/// One chat message.
#[derive(Serialize, ToSchema)]
pub struct MessageBody {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// `POST /v1/guard`.
#[derive(Serialize, ToSchema)]
pub struct GuardBody {
    /// The conversation; its last message is judged (a response when it is the
    /// assistant's).
    pub messages: Vec<MessageBody>,
    /// Overrides the server's `--mode` for `flagged`.
    pub mode: Option<qwen3guard::Mode>,
    /// Severity and scores from one pass; categories decoded only when not Safe.
    pub verdict_only: Option<bool>,
    /// Decode at most this many tokens (0 to 128, the default; 0 with `verdict_only`:
    /// the label and scores alone).
    pub max_new_tokens: Option<usize>,
}

/// `input`: one text or several.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ModerationInput {
    /// One text.
    One(String),
    /// Several texts, each judged as a user prompt.
    Many(Vec<String>),
}

/// `POST /v1/moderations` (other OpenAI fields are accepted and ignored).
#[derive(Serialize, ToSchema)]
pub struct ModerationBody {
    /// The texts, each judged as a user prompt.
    pub input: ModerationInput,
    /// Echoed back; the loaded Gen model answers.
    pub model: Option<String>,
}

/// `POST /v1/stream/sessions`.
#[derive(Serialize, ToSchema)]
pub struct OpenBody {
    /// Ends with a user message, or with a user message and a partial assistant message
    /// (appended at open).
    pub messages: Vec<MessageBody>,
    /// The response starts with reasoning (`<think>` open).
    pub thinking: Option<bool>,
}

/// `POST /v1/stream/sessions/{id}/append`: `token_ids` or `text`, or only `final`.
#[derive(Serialize, ToSchema)]
pub struct AppendBody {
    /// Qwen3 token ids generated since the last append.
    pub token_ids: Option<Vec<u32>>,
    /// Text generated since the last append (re-tokenized; unsettled tokens held back).
    pub text: Option<String>,
    /// Tokens or characters sent before this append; a repeat is acknowledged, a gap is
    /// a 409.
    pub offset: Option<usize>,
    /// The response is complete: release held-back text.
    #[serde(rename = "final")]
    pub last: Option<bool>,
}

/// One rollout of `POST /v1/reward`.
#[derive(Serialize, ToSchema)]
pub struct RewardSampleBody {
    /// The prompt turns, ending with the user's.
    pub messages: Vec<MessageBody>,
    /// The policy's final answer.
    pub response: String,
    /// The policy's reasoning, judged on its own.
    pub thinking: Option<String>,
    /// The helpfulness reward (hybrid; else asked of `--helpfulness-url`).
    pub helpfulness: Option<f64>,
}

/// `POST /v1/reward`.
#[derive(Serialize, ToSchema)]
pub struct RewardBody {
    /// The rollouts (at most `--max-reward-samples`).
    pub samples: Vec<RewardSampleBody>,
    /// The formula.
    pub reward: RewardKind,
    /// Overrides the server's `--mode`: whether Controversial is unsafe for the hybrid
    /// reward (guard-only never counts it safe).
    pub mode: Option<qwen3guard::Mode>,
    /// Guard-only: judge each answer from one pass's label scores (faster; `refusal` is
    /// then only written for answers that are not Safe).
    pub verdict_only: Option<bool>,
}

/// `POST /get_reward` (OpenRLHF's remote reward protocol; other fields are ignored).
#[derive(Serialize, ToSchema)]
pub struct GetRewardBody {
    /// Each rollout's whole text: its prompt, then the generated response.
    pub query: Vec<String>,
    /// Each rollout's prompt text, the beginning of its query.
    pub prompts: Vec<String>,
    /// Passed on to the helpfulness server, otherwise unused.
    #[schema(value_type = Option<Vec<Object>>)]
    pub labels: Option<Vec<serde_json::Value>>,
}

/// Every error's body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The error itself, in OpenAI's shape.
#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A sentence naming what is wrong.
    pub message: String,
    /// The class (`invalid_request_error`, `authentication_error`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// A stable machine-readable code (`invalid_request`, `session_not_found`, ...).
    pub code: String,
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "qwen3guard server",
        description = "Qwen3Guard moderation over HTTP: OpenAI-compatible /v1/moderations, \
            /v1/guard, safety rewards for RL (/v1/reward, OpenRLHF's /get_reward), and \
            stateful Stream sessions, and a guarded chat proxy in front of an \
            OpenAI-compatible LLM (/v1/chat/completions). See docs/SERVER.md, \
            docs/REWARD.md and docs/PROXY.md."
    ),
    paths(
        handlers::live,
        handlers::health,
        handlers::metrics,
        handlers::moderations,
        handlers::guard,
        reward::reward,
        reward::get_reward,
        handlers::open_session,
        handlers::append,
        handlers::get_session,
        handlers::delete_session,
        ws::upgrade,
        crate::proxy::chat_completions,
        crate::proxy::models,
        crate::proxy::litellm::guardrail,
        serve,
    ),
    components(schemas(
        MessageBody,
        GuardBody,
        ModerationBody,
        ModerationInput,
        OpenBody,
        AppendBody,
        RewardBody,
        RewardSampleBody,
        GetRewardBody,
        Rewards,
        OpenRlhfRewards,
        Detail,
        PartScores,
        Outcome,
        RewardKind,
        ErrorBody,
        ErrorDetail,
        Moderation,
        ModerationResult,
        Native,
        Opened,
        Appended,
        SessionView,
        crate::proxy::litellm::GuardrailBody,
        crate::proxy::litellm::GuardrailAnswer,
    ))
)]
pub struct ApiDoc;

/// The document as JSON text (what `/openapi.json` serves and `docs/openapi.json` holds).
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot write the OpenAPI document: {e}\"}}"))
}

/// `GET /openapi.json`.
#[utoipa::path(get, path = "/openapi.json", tag = "meta",
    responses((status = 200, description = "This document")))]
pub async fn serve() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::{
        APPEND_FIELDS, GET_REWARD_FIELDS, GUARD_FIELDS, OPEN_FIELDS, REWARD_FIELDS, SAMPLE_FIELDS,
    };

    fn properties(schema: &str) -> Vec<String> {
        let doc: serde_json::Value = serde_json::from_str(&document()).unwrap();
        let mut names: Vec<String> = doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{schema} has no properties"))
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn sorted(fields: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        names.sort();
        names
    }

    #[test]
    fn body_schemas_name_the_fields_the_validator_accepts() {
        assert_eq!(properties("GuardBody"), sorted(&GUARD_FIELDS));
        assert_eq!(properties("OpenBody"), sorted(&OPEN_FIELDS));
        assert_eq!(properties("AppendBody"), sorted(&APPEND_FIELDS));
        assert_eq!(properties("RewardBody"), sorted(&REWARD_FIELDS));
        assert_eq!(properties("RewardSampleBody"), sorted(&SAMPLE_FIELDS));
        assert_eq!(properties("GetRewardBody"), sorted(&GET_REWARD_FIELDS));
    }
}
