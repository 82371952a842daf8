//! Raw JSON bodies -> validated request types; every message names the field at fault.
//!
//! Bodies are parsed here rather than by a typed extractor so that a wrong field gets the
//! server's error shape and a message a client can act on, and so that only requests the
//! engine can run reach the scheduler.

use qwen3guard::gen::DEFAULT_MAX_NEW_TOKENS;
use qwen3guard::{Conversation, Message, Mode, Role};
use serde_json::{Map, Value};

use crate::http::AppError;

mod reward;
mod strict_json;

pub use reward::{
    get_reward, reward, reward_sample, GetRewardRequest, RewardRequest, GET_REWARD_FIELDS,
    REWARD_FIELDS, SAMPLE_FIELDS,
};

/// `POST /v1/guard`.
#[derive(Debug, Clone)]
pub struct GuardRequest {
    /// The conversation; its last message is judged.
    pub conversation: Conversation,
    /// Overrides the server's mode.
    pub mode: Option<Mode>,
    /// Severity from one pass, categories only when not Safe.
    pub verdict_only: bool,
    /// A lower cap on decoded tokens than the default.
    pub max_new_tokens: Option<usize>,
}

/// `POST /v1/moderations`.
#[derive(Debug, Clone)]
pub struct ModerationRequest {
    /// The texts, each judged as a user prompt.
    pub inputs: Vec<String>,
    /// The `model` the client named (echoed back; the loaded Gen model answers).
    pub model: Option<String>,
}

/// `POST /v1/stream/sessions`.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    /// The conversation up to and including the last user message.
    pub prompt: Conversation,
    /// A trailing partial assistant message, appended at open.
    pub partial: Option<String>,
    /// Whether the response starts with reasoning (`<think>` open).
    pub thinking: bool,
}

/// What an append carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppendInput {
    /// Qwen3 token ids.
    Tokens(Vec<u32>),
    /// A text delta.
    Text(String),
    /// Nothing (a bare `final`).
    Nothing,
}

/// `POST /v1/stream/sessions/{id}/append`.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    /// The new tokens or text.
    pub input: AppendInput,
    /// Tokens (for `token_ids`) or characters (for `text`) sent before this append.
    pub offset: Option<usize>,
    /// The response is complete: release held-back text.
    pub last: bool,
}

/// The fields a `/v1/guard` body may have (the OpenAPI schema is checked against it).
pub const GUARD_FIELDS: [&str; 4] = ["messages", "mode", "verdict_only", "max_new_tokens"];
/// The fields a session-opening body may have.
pub const OPEN_FIELDS: [&str; 2] = ["messages", "thinking"];
/// The fields an append body may have.
pub const APPEND_FIELDS: [&str; 4] = ["token_ids", "text", "offset", "final"];

pub(crate) fn invalid(message: impl Into<String>) -> AppError {
    AppError::Invalid(message.into())
}

/// Parses a body as a JSON object, refusing a key given twice in any object (see
/// [`strict_json`]).
pub fn object(body: &[u8]) -> Result<Map<String, Value>, AppError> {
    if body.is_empty() {
        return Err(invalid("the request body is empty; send a JSON object"));
    }
    match strict_json::parse(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("the request body must be a JSON object")),
        Err(e) => Err(invalid(format!(
            "the request body is not valid JSON: {e}{}",
            qwen3guard::error::json_hint(&e)
        ))),
    }
}

/// Refuses fields other than `allowed`, so that a typo is not silently ignored.
pub(crate) fn only(map: &Map<String, Value>, allowed: &[&str]) -> Result<(), AppError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => Err(invalid(format!(
            "unknown field `{key}` (expected {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

pub(crate) fn optional_bool(map: &Map<String, Value>, field: &str) -> Result<bool, AppError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(invalid(format!("`{field}` must be true or false"))),
    }
}

fn optional_count(map: &Map<String, Value>, field: &str) -> Result<Option<usize>, AppError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| invalid(format!("`{field}` must be a non-negative integer"))),
    }
}

/// `messages`: a non-empty array of `{role, content}` with known roles. `place` is what
/// holds the field (`samples[2].` in a batch, empty at the top), so that a message names
/// the exact field at fault.
pub(crate) fn messages(map: &Map<String, Value>, place: &str) -> Result<Vec<Message>, AppError> {
    let Some(value) = map.get("messages") else {
        return Err(invalid(format!("missing field `{place}messages`")));
    };
    let Value::Array(items) = value else {
        return Err(invalid(format!(
            "`{place}messages` must be an array of {{role, content}} objects"
        )));
    };
    if items.is_empty() {
        return Err(invalid(format!(
            "`{place}messages` is empty; give at least one user message"
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{place}messages[{i}]");
            let Value::Object(m) = item else {
                return Err(invalid(format!("`{at}` must be an object")));
            };
            only(m, &["role", "content"]).map_err(|e| invalid(format!("`{at}`: {e}")))?;
            let role = match m.get("role").and_then(Value::as_str) {
                Some("system") => Role::System,
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some(other) => {
                    return Err(invalid(format!(
                        "`{at}.role` is {other:?}; expected system, user or assistant"
                    )))
                }
                None => return Err(invalid(format!("`{at}.role` must be a string"))),
            };
            let content = m
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("`{at}.content` must be a string")))?;
            Ok(Message::new(role, content))
        })
        .collect()
}

/// `mode`: `strict` or `loose`, or absent.
pub(crate) fn optional_mode(map: &Map<String, Value>) -> Result<Option<Mode>, AppError> {
    match map.get("mode") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "strict" => Ok(Some(Mode::Strict)),
        Some(Value::String(s)) if s == "loose" => Ok(Some(Mode::Loose)),
        Some(_) => Err(invalid("`mode` must be \"strict\" or \"loose\"")),
    }
}

fn conversation(messages: Vec<Message>) -> Result<Conversation, AppError> {
    Conversation::new(messages).map_err(|e| invalid(format!("`messages`: {e}")))
}

/// Validates a `/v1/guard` body.
pub fn guard(body: &[u8]) -> Result<GuardRequest, AppError> {
    let map = object(body)?;
    only(&map, &GUARD_FIELDS)?;
    Ok(GuardRequest {
        conversation: conversation(messages(&map, "")?)?,
        mode: optional_mode(&map)?,
        verdict_only: optional_bool(&map, "verdict_only")?,
        max_new_tokens: match optional_count(&map, "max_new_tokens")? {
            Some(n) if n > DEFAULT_MAX_NEW_TOKENS => {
                return Err(invalid(format!(
                    "`max_new_tokens` must be at most {DEFAULT_MAX_NEW_TOKENS}"
                )))
            }
            n => n,
        },
    })
}

/// Validates a `/v1/moderations` body (unknown OpenAI fields are tolerated: SDKs send
/// them); `input` may hold at most `max_inputs` texts.
pub fn moderation(body: &[u8], max_inputs: usize) -> Result<ModerationRequest, AppError> {
    let map = object(body)?;
    let inputs = match map.get("input") {
        None => return Err(invalid("missing field `input`")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(invalid(format!(
                    "`input[{i}]` must be a string (multimodal input is not supported)"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Array(_)) => return Err(invalid("`input` is an empty array")),
        Some(_) => return Err(invalid("`input` must be a string or an array of strings")),
    };
    if inputs.len() > max_inputs {
        return Err(invalid(format!(
            "`input` has {} entries; at most {max_inputs} per request \
             (--max-moderation-inputs): split the batch",
            inputs.len()
        )));
    }
    if let Some(i) = inputs.iter().position(String::is_empty) {
        return Err(invalid(format!("`input[{i}]` is empty")));
    }
    let model = match map.get("model") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(invalid("`model` must be a string")),
    };
    Ok(ModerationRequest { inputs, model })
}

/// Validates a session-opening body.
pub fn open(body: &[u8]) -> Result<OpenRequest, AppError> {
    open_fields(&object(body)?)
}

/// [`open`] on fields already parsed (a WebSocket frame's, less its `op`).
pub fn open_fields(map: &Map<String, Value>) -> Result<OpenRequest, AppError> {
    only(map, &OPEN_FIELDS)?;
    let mut messages = messages(map, "")?;
    let partial = match messages.last() {
        Some(m) if m.role == Role::Assistant => messages.pop().map(|m| m.content),
        _ => None,
    };
    if messages.last().map(|m| m.role) != Some(Role::User) {
        return Err(invalid(
            "`messages` must end with a user message, or with a user message and a partial assistant message",
        ));
    }
    Ok(OpenRequest {
        prompt: conversation(messages)?,
        partial,
        thinking: optional_bool(map, "thinking")?,
    })
}

/// Validates an append body.
pub fn append(body: &[u8]) -> Result<AppendRequest, AppError> {
    append_fields(&object(body)?)
}

/// [`append`] on fields already parsed (a WebSocket frame's, less its `op` and `id`).
pub fn append_fields(map: &Map<String, Value>) -> Result<AppendRequest, AppError> {
    only(map, &APPEND_FIELDS)?;
    let input = match (map.get("token_ids"), map.get("text")) {
        (Some(_), Some(_)) => return Err(invalid("give `token_ids` or `text`, not both")),
        (Some(Value::Array(items)), None) => AppendInput::Tokens(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_u64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| {
                            invalid(format!(
                                "`token_ids[{i}]` must be a token id (a non-negative integer)"
                            ))
                        })
                })
                .collect::<Result<_, _>>()?,
        ),
        (Some(_), None) => return Err(invalid("`token_ids` must be an array of integers")),
        (None, Some(Value::String(s))) => AppendInput::Text(s.clone()),
        (None, Some(_)) => return Err(invalid("`text` must be a string")),
        (None, None) => AppendInput::Nothing,
    };
    let last = optional_bool(map, "final")?;
    if input == AppendInput::Nothing && !last {
        return Err(invalid("give `token_ids` or `text` (or `final`: true)"));
    }
    Ok(AppendRequest {
        input,
        offset: optional_count(map, "offset")?,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<impl std::fmt::Debug, AppError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn messages_name_the_field() {
        assert!(message(guard(b"{")).contains("not valid JSON"));
        assert!(message(guard(b"[]")).contains("JSON object"));
        assert!(message(guard(b"{}")).contains("`messages`"));
        let bad_role = br#"{"messages":[{"role":"bot","content":"x"}]}"#;
        assert!(message(guard(bad_role)).contains("`messages[0].role`"));
        let bad_content = br#"{"messages":[{"role":"user","content":3}]}"#;
        assert!(message(guard(bad_content)).contains("`messages[0].content`"));
        assert!(message(guard(br#"{"messages":[]}"#)).contains("empty"));
        let bad_mode = br#"{"messages":[{"role":"user","content":"x"}],"mode":"x"}"#;
        assert!(message(guard(bad_mode)).contains("`mode`"));
        assert!(message(moderation(br#"{"input":[1]}"#, 8)).contains("`input[0]`"));
        assert!(message(moderation(br#"{"input":""}"#, 8)).contains("`input[0]` is empty"));
        // More inputs than the queue could hold would be 503 forever: refused at once.
        let three = br#"{"input":["a","b","c"]}"#;
        assert!(message(moderation(three, 2)).contains("`input` has 3 entries; at most 2"));
        assert!(moderation(three, 3).is_ok());
        assert!(message(append(br#"{"token_ids":[-1]}"#)).contains("`token_ids[0]`"));
        assert!(message(append(br#"{"text":"a","token_ids":[]}"#)).contains("not both"));
        assert!(message(append(br#"{"text":"a","offset":-2}"#)).contains("`offset`"));
        assert!(message(append(br#"{"txt":"a"}"#)).contains("unknown field `txt`"));
        // A parser differential: serde_json's values keep the last of two equal keys.
        let twice = br#"{"messages":[{"role":"assistant","role":"user","content":"x"}]}"#;
        assert!(message(guard(twice)).contains("the key `role` appears twice"));
        let lone = br#"{"messages":[{"role":"user","content":"\ud800 x"}]}"#;
        assert!(message(guard(lone)).contains("half of a surrogate pair"));
    }

    #[test]
    fn valid_bodies_parse() {
        let g = guard(
            br#"{"messages":[{"role":"user","content":"hi"}],"mode":"loose","verdict_only":true}"#,
        )
        .unwrap();
        assert_eq!(g.mode, Some(Mode::Loose));
        assert!(g.verdict_only);
        let m = moderation(br#"{"input":["a","b"],"model":"m"}"#, 2).unwrap();
        assert_eq!(m.inputs, vec!["a", "b"]);
        let o = open(br#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"Sure"}]}"#).unwrap();
        assert_eq!(o.partial.as_deref(), Some("Sure"));
        assert_eq!(o.prompt.messages().len(), 1);
        let a = append(br#"{"final":true}"#).unwrap();
        assert!(a.last && a.input == AppendInput::Nothing);
    }
}
