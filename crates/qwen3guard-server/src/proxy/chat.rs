//! The OpenAI chat-completions shapes the proxy reads and writes: the client's request
//! (forwarded as it is, its messages read into the guard's conversation), the text of a
//! streamed chunk or a whole completion, and the chunks and completions the proxy makes
//! itself (refusals, the content-filter end).

use std::sync::atomic::Ordering;

use qwen3guard::{Conversation, Message, Role};
use serde_json::{json, Map, Value};

use crate::http::{AppError, AppState};
use crate::validation::{invalid, object};

/// What the proxy says instead of an answer it will not give.
pub const REFUSAL: &str = "I can't help with that request.";

/// A validated `POST /v1/chat/completions`.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The body as the client sent it (what the upstream gets).
    pub body: Map<String, Value>,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The conversation up to its last user message, for the guard.
    pub prompt: Conversation,
}

/// Validates a chat-completions body. Fields the proxy does not read are the upstream's
/// business and pass unchecked; those it reads must make sense.
pub fn chat_request(body: &[u8]) -> Result<ChatRequest, AppError> {
    let body = object(body)?;
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("`stream` must be true or false")),
    };
    match body.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(invalid(
                "`n` must be 1: the guard judges one answer per request",
            ))
        }
    }
    let Some(Value::Array(items)) = body.get("messages") else {
        return Err(invalid(
            "`messages` must be an array of chat messages (missing or not an array)",
        ));
    };
    let prompt = guard_prompt(items)?;
    Ok(ChatRequest {
        body,
        stream,
        prompt,
    })
}

/// A message's text: a string, or the `text` parts of an array of parts.
fn message_text(content: Option<&Value>, at: &str) -> Result<String, AppError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => Ok(parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n")),
        Some(_) => Err(invalid(format!(
            "`{at}.content` must be a string or an array of content parts"
        ))),
    }
}

/// The chat messages as the guard's conversation: system (and `developer`), user and
/// assistant text, up to and including the last user message; tool results and empty
/// messages (an assistant turn that only calls tools) carry no text to judge.
fn guard_prompt(items: &[Value]) -> Result<Conversation, AppError> {
    let mut messages = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("messages[{i}]");
        let Value::Object(m) = item else {
            return Err(invalid(format!("`{at}` must be an object")));
        };
        let role = match m.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => Role::System,
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            Some("tool" | "function") => continue,
            Some(other) => {
                return Err(invalid(format!(
                    "`{at}.role` is {other:?}; expected system, developer, user, assistant or tool"
                )))
            }
            None => return Err(invalid(format!("`{at}.role` must be a string"))),
        };
        let text = message_text(m.get("content"), &at)?;
        if !text.is_empty() {
            messages.push(Message::new(role, text));
        }
    }
    let Some(last_user) = messages.iter().rposition(|m| m.role == Role::User) else {
        return Err(invalid(
            "`messages` has no user message with text: the guard judges the last user turn",
        ));
    };
    messages.truncate(last_user + 1);
    // The guard's template wants the system turn first, as chat templates do.
    let (mut system, rest): (Vec<Message>, Vec<Message>) =
        messages.into_iter().partition(|m| m.role == Role::System);
    if system.len() > 1 {
        let joined = system
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        system = vec![Message::new(Role::System, joined)];
    }
    system.extend(rest);
    Conversation::new(system).map_err(|e| invalid(format!("`messages`: {e}")))
}

/// `value` as a JSON value written the way the server writes bodies: through text, so that
/// an `f32` keeps its shortest form (0.2176 stays 0.2176, not its widened f64 digits).
pub fn as_value<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_string(value)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(Value::Null)
}

/// The first choice's `finish_reason`, when the chunk has one.
pub fn finish_reason(chunk: &Value) -> Option<&str> {
    chunk.get("choices")?.get(0)?.get("finish_reason")?.as_str()
}

/// The names servers give the reasoning text, in the order they are looked for
/// (`reasoning_content` in most; `reasoning` in newer vLLM and in Ollama).
const REASONING_FIELDS: [&str; 2] = ["reasoning_content", "reasoning"];

fn reasoning_field(object: &Map<String, Value>) -> &'static str {
    REASONING_FIELDS
        .into_iter()
        .find(|name| object.get(*name).is_some_and(Value::is_string))
        .unwrap_or(REASONING_FIELDS[0])
}

/// The reasoning and content of a delta or message object.
fn texts(object: Option<&Value>) -> (&str, &str) {
    let Some(object) = object.and_then(Value::as_object) else {
        return ("", "");
    };
    let field = |name: &str| object.get(name).and_then(Value::as_str).unwrap_or("");
    (field(reasoning_field(object)), field("content"))
}

/// The answer text a streamed chunk carries: its reasoning and its content.
pub fn delta_texts(chunk: &Value) -> (&str, &str) {
    texts(chunk.pointer("/choices/0/delta"))
}

/// The answer text of a whole completion: its reasoning and its content.
pub fn message_texts(completion: &Value) -> (String, String) {
    let (reasoning, content) = texts(completion.pointer("/choices/0/message"));
    (reasoning.to_string(), content.to_string())
}

/// Sets the texts of a delta or message object (a field given as `None` is left as it
/// is); reasoning goes to whichever reasoning field the object already uses.
pub fn set_texts(object: Option<&mut Value>, reasoning: Option<&str>, content: Option<&str>) {
    let Some(object) = object.and_then(Value::as_object_mut) else {
        return;
    };
    let reasoning_name = reasoning_field(object);
    for (name, text) in [(reasoning_name, reasoning), ("content", content)] {
        if let Some(text) = text {
            object.insert(name.into(), Value::from(text));
        }
    }
}

/// Sets a streamed chunk's texts (a field given as `None` is left as it is).
pub fn set_delta_texts(chunk: &mut Value, reasoning: Option<&str>, content: Option<&str>) {
    set_texts(chunk.pointer_mut("/choices/0/delta"), reasoning, content);
}

/// Sets the first choice's field `name`, in a streamed chunk or a completion.
pub fn set_choice_field(chunk: &mut Value, name: &str, value: Value) {
    if let Some(choice) = chunk
        .get_mut("choices")
        .and_then(|c| c.get_mut(0))
        .and_then(Value::as_object_mut)
    {
        choice.insert(name.into(), value);
    }
}

/// The `id`, `created` and `model` of the answer, for chunks the proxy makes itself.
#[derive(Debug, Clone)]
pub struct Identity {
    id: Value,
    created: Value,
    model: Value,
}

impl Identity {
    /// Taken from an upstream chunk or completion.
    pub fn of(value: &Value) -> Self {
        let get = |k| value.get(k).cloned().unwrap_or(Value::Null);
        Identity {
            id: get("id"),
            created: get("created"),
            model: get("model"),
        }
    }

    /// A fresh one, for an answer the upstream never gave (a refused prompt).
    pub fn fresh(state: &AppState, model: Option<&Value>) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Identity {
            id: Value::from(format!(
                "chatcmpl-guard-{}",
                state.counter.fetch_add(1, Ordering::Relaxed)
            )),
            created: Value::from(created),
            model: model.cloned().unwrap_or(Value::Null),
        }
    }

    /// A streamed chunk with `delta` and `finish_reason`.
    pub fn chunk(&self, delta: Value, finish: Option<&str>) -> Value {
        json!({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    /// A whole completion saying `content`, ended by `finish`.
    pub fn completion(&self, content: &str, finish: &str) -> Value {
        json!({
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish}],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_leniently_but_checked_where_read() {
        let r = chat_request(
            br#"{"model":"m","stream":true,"temperature":0.2,"messages":[
                {"role":"system","content":"Be brief."},
                {"role":"user","content":[{"type":"text","text":"Hi"},{"type":"image_url","image_url":{"url":"x"}}]},
                {"role":"assistant","content":null,"tool_calls":[]},
                {"role":"tool","content":"42","tool_call_id":"t"},
                {"role":"user","content":"And now?"}]}"#,
        )
        .unwrap();
        assert!(r.stream);
        let roles: Vec<Role> = r.prompt.messages().iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::System, Role::User, Role::User]);
        assert_eq!(r.body["temperature"], 0.2);
        let error = |b: &[u8]| chat_request(b).unwrap_err().to_string();
        assert!(error(br#"{"messages":[]}"#).contains("no user message"));
        assert!(
            error(br#"{"messages":[{"role":"x","content":"a"}]}"#).contains("`messages[0].role`")
        );
        assert!(error(br#"{"messages":[{"role":"user","content":"a"}],"n":2}"#).contains("`n`"));
        assert!(
            error(br#"{"messages":[{"role":"user","content":"a"}],"stream":1}"#)
                .contains("`stream`")
        );
        assert!(error(br#"{"model":"m"}"#).contains("`messages`"));
    }

    #[test]
    fn chunk_texts_read_and_write() {
        let mut chunk =
            json!({"choices":[{"index":0,"delta":{"content":"ab","reasoning_content":"r"}}]});
        assert_eq!(delta_texts(&chunk), ("r", "ab"));
        set_delta_texts(&mut chunk, None, Some("a"));
        assert_eq!(delta_texts(&chunk), ("r", "a"));
        set_choice_field(&mut chunk, "finish_reason", json!("stop"));
        assert_eq!(finish_reason(&chunk), Some("stop"));
        assert_eq!(delta_texts(&json!({"choices":[]})), ("", ""));
        let mut newer = json!({"choices":[{"delta":{"reasoning":"think"}}]});
        assert_eq!(delta_texts(&newer), ("think", ""));
        set_delta_texts(&mut newer, Some("th"), None);
        assert_eq!(newer["choices"][0]["delta"], json!({"reasoning": "th"}));
    }
}
