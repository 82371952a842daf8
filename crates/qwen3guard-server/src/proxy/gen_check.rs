//! Gen beside Stream, when the server has a Gen model and the client asks for it with
//! `x-qwen3guard-gen: true`: Gen judges the prompt before the upstream is called and, for
//! non-streamed answers, the answer before it is returned. Streamed answers are judged
//! by Stream alone (Gen reads a whole answer; it cannot stop one mid-stream).

use axum::http::HeaderMap;
use qwen3guard::{Conversation, GenOptions, Message, Role};
use serde_json::Value;

use crate::http::{native, AppError, AppState};
use crate::scheduler::Command;

/// The request header that asks for Gen.
pub const HEADER: &str = "x-qwen3guard-gen";

/// Whether the client asked for Gen (`x-qwen3guard-gen: true`); 501 without a Gen model.
pub fn asked(state: &AppState, headers: &HeaderMap) -> Result<bool, AppError> {
    let asked = headers
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if asked && state.scheduler()?.models().gen.is_none() {
        return Err(AppError::ModelNotLoaded(format!(
            "`{HEADER}: true` needs a Gen model (start with --gen-model)"
        )));
    }
    Ok(asked)
}

/// Gen's verdict on `conversation` (its last message: the prompt, or an answer), as
/// `/v1/guard` writes it, when it is blocked under the server's mode.
pub async fn blocked(
    state: &AppState,
    conversation: Conversation,
) -> Result<Option<Value>, AppError> {
    let outcome = state
        .scheduler()?
        .call(|reply| Command::Gen {
            conversation,
            options: GenOptions::default(),
            category_scores: false,
            reply,
        })
        .await?;
    let verdict = native(&outcome.verdict, state.config.mode);
    Ok(verdict.flagged.then(|| super::chat::as_value(&verdict)))
}

/// `prompt` followed by the assistant's `answer`.
pub fn with_answer(prompt: &Conversation, answer: &str) -> Result<Conversation, AppError> {
    let mut messages = prompt.messages().to_vec();
    messages.push(Message::new(Role::Assistant, answer));
    Conversation::new(messages).map_err(AppError::from)
}
