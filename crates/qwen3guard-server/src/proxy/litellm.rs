//! LiteLLM's Generic Guardrail API (`POST /beta/litellm_basic_guardrail_api`), so that a
//! LiteLLM gateway can use this server as its guardrail from its `config.yaml` alone.
//!
//! LiteLLM sends the texts it extracted from a request or a response; each is judged with
//! the Stream model (a request's text as a user prompt, by the query heads; a response's
//! text as the answer to the last user message of `request_data`, when LiteLLM sends it,
//! by the debounced response heads) and the answer is `BLOCKED` if any is flagged under
//! the server's mode, `NONE` otherwise.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use qwen3guard::Conversation;
use serde_json::{json, Value};

use super::judge::Judge;
use crate::http::openapi::ErrorBody;
use crate::http::{AppError, AppState};
use crate::validation::{invalid, object};

/// LiteLLM's request (its other fields are ignored).
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct GuardrailBody {
    /// The texts LiteLLM extracted.
    pub texts: Vec<String>,
    /// `request` (texts are prompts) or `response` (texts are answers).
    pub input_type: Option<String>,
    /// The original request; its last user message is what a response answers.
    #[schema(value_type = Option<Object>)]
    pub request_data: Option<Value>,
}

/// The answer LiteLLM reads.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct GuardrailAnswer {
    /// `BLOCKED` or `NONE`.
    pub action: String,
    /// Which text was flagged, its level and category.
    pub blocked_reason: Option<String>,
}

/// What a response is judged against when LiteLLM sends no user message with it.
const NO_PROMPT: &str = "(no prompt given)";

/// `POST /beta/litellm_basic_guardrail_api`.
#[utoipa::path(post, path = "/beta/litellm_basic_guardrail_api", tag = "proxy",
    request_body = GuardrailBody, responses(
    (status = 200, description = "BLOCKED if any text is flagged under the server's mode", body = GuardrailAnswer),
    (status = 400, description = "Malformed or invalid body", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Body or input too large", body = ErrorBody), (status = 503, description = "Loading, busy (Retry-After) or shutting down", body = ErrorBody)))]
pub async fn guardrail(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, AppError> {
    let map = object(&crate::http::body(raw)?)?;
    let texts = match map.get("texts") {
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("`texts[{i}]` must be a string")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        // Earlier versions of the protocol sent one `text`.
        None => match map.get("text") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(text)) => vec![text.clone()],
            Some(_) => return Err(invalid("`text` must be a string")),
        },
        Some(_) => return Err(invalid("`texts` must be an array of strings")),
    };
    let response = match map.get("input_type").and_then(Value::as_str) {
        None | Some("request") => false,
        Some("response") => true,
        Some(other) => {
            return Err(invalid(format!(
                "`input_type` is {other:?}; expected \"request\" or \"response\""
            )))
        }
    };
    let prompt = last_user_text(map.get("request_data")).unwrap_or_else(|| NO_PROMPT.into());
    let mode = state.config.mode;
    for (i, text) in texts
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.trim().is_empty())
    {
        let conversation = match response {
            false => Conversation::from_prompt(text, None),
            true => Conversation::from_prompt(&prompt, None),
        };
        let mut judge = Judge::open(&state, &conversation, None, mode).await?;
        let verdict = match response {
            false => judge
                .prompt_blocked()
                .then(|| (judge.prompt.risk_level, Some(judge.prompt.category.clone()))),
            true => {
                let appended = judge.feed(text.clone(), true).await;
                match appended {
                    Ok(a) => a.stop.map(|s| (s.risk_level, s.category)),
                    Err(e) => {
                        judge.close().await;
                        return Err(e.at(format!("texts[{i}]")));
                    }
                }
            }
        };
        judge.close().await;
        if let Some((level, category)) = verdict {
            state.metrics.flagged(category.iter().map(String::as_str));
            let category = category.unwrap_or_else(|| "None".into());
            return Ok(Json(json!({
                "action": "BLOCKED",
                "blocked_reason": format!("Qwen3Guard: texts[{i}] is {level} ({category})"),
            })));
        }
    }
    Ok(Json(json!({"action": "NONE", "blocked_reason": null})))
}

/// The text of the last user message in LiteLLM's `request_data.messages`.
fn last_user_text(request_data: Option<&Value>) -> Option<String> {
    request_data?
        .get("messages")?
        .as_array()?
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| m.get("content"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
