//! The completions protocol of the Gen backend: the request body, and the answer read
//! into token ids and top log-probabilities per generated position.
//!
//! Servers disagree on the shape of `logprobs` in `/v1/completions`; both are read:
//! - llama.cpp's `llama-server`: `logprobs.content`, one `{id, token, logprob,
//!   top_logprobs: [{id, token, logprob}]}` per position: ids are given.
//! - vLLM and SGLang (OpenAI's legacy shape): `logprobs.tokens` and
//!   `logprobs.top_logprobs`, one `{token_text: logprob}` map per position. The request
//!   asks for `return_tokens_as_token_ids` (vLLM), which writes every token as
//!   `token_id:N`; a server that ignores it gives token texts, which are matched against
//!   the decoded text of the tokens looked for.

use serde_json::{json, Value};

use crate::proxy::upstream::UpstreamError;

/// Top log-probabilities asked for at every position: vLLM's default `--max-logprobs`.
pub const TOP_LOGPROBS: usize = 20;

/// One alternative at a position.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    /// Its id, when the server gave one.
    pub id: Option<u32>,
    /// Its text as the server wrote it.
    pub text: String,
    /// Its log-probability (softmax over the whole vocabulary).
    pub logprob: f32,
}

/// One generated position.
#[derive(Debug, Clone, PartialEq)]
pub struct Position {
    /// The chosen token's id, when the server gave one.
    pub id: Option<u32>,
    /// The chosen token's text.
    pub text: String,
    /// The most probable tokens there.
    pub top: Vec<Alternative>,
}

/// A completion as read from the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// `choices[0].text`.
    pub text: String,
    /// Every generated position, in order.
    pub positions: Vec<Position>,
    /// `choices[0].finish_reason` (`stop`, `length`).
    pub finish_reason: Option<String>,
}

impl Completion {
    /// The generated ids, if the server named every token by id.
    pub fn ids(&self) -> Option<Vec<u32>> {
        self.positions.iter().map(|p| p.id).collect()
    }
}

/// The body of a greedy completion of `prompt` (token ids) of at most `max_tokens` tokens,
/// with the top log-probabilities at every position.
pub fn request(model: &str, prompt: &[u32], max_tokens: usize, stop_ids: &[u32]) -> Value {
    json!({
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "logprobs": TOP_LOGPROBS,
        "echo": false,
        "stream": false,
        // vLLM and SGLang: stop on the checkpoint's end tokens even if the served
        // generation config names others; tokens written as ids in `logprobs`. Servers
        // that do not know these fields ignore them.
        "stop_token_ids": stop_ids,
        "return_tokens_as_token_ids": true,
    })
}

/// Reads an answer of `url`.
pub fn parse(url: &str, answer: &Value) -> Result<Completion, UpstreamError> {
    let malformed = |what: &str| UpstreamError::Malformed(format!("{url}: {what}"));
    let choice = answer
        .pointer("/choices/0")
        .ok_or_else(|| malformed("the answer has no choices[0]"))?;
    let text = choice
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("choices[0] has no text"))?
        .to_string();
    let finish_reason = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .map(str::to_string);
    let logprobs = choice
        .get("logprobs")
        .filter(|l| !l.is_null())
        .ok_or_else(|| {
            malformed(
            "choices[0] has no logprobs: the backend must return `logprobs` on /v1/completions \
             (vLLM: --max-logprobs 20)",
        )
        })?;
    let positions = match (logprobs.get("content"), logprobs.get("top_logprobs")) {
        (Some(Value::Array(content)), _) => content
            .iter()
            .map(|p| {
                llama_position(p).ok_or_else(|| malformed("a malformed logprobs.content entry"))
            })
            .collect::<Result<Vec<_>, _>>()?,
        (_, Some(Value::Array(tops))) => {
            let tokens = logprobs
                .get("tokens")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed("logprobs has top_logprobs but no tokens"))?;
            if tokens.len() != tops.len() {
                return Err(malformed(
                    "logprobs.tokens and logprobs.top_logprobs differ in length",
                ));
            }
            tokens
                .iter()
                .zip(tops)
                .map(|(t, top)| {
                    legacy_position(t, top)
                        .ok_or_else(|| malformed("a malformed logprobs.top_logprobs entry"))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        _ => {
            return Err(malformed(
                "logprobs has neither content (llama-server) nor top_logprobs (OpenAI, vLLM)",
            ))
        }
    };
    Ok(Completion {
        text,
        positions,
        finish_reason,
    })
}

/// A llama-server position: `{id, token, logprob, top_logprobs: [{id, token, logprob}]}`.
fn llama_position(p: &Value) -> Option<Position> {
    let alternative = |a: &Value| {
        Some(Alternative {
            id: a
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok()),
            text: a.get("token")?.as_str()?.to_string(),
            logprob: a.get("logprob")?.as_f64()? as f32,
        })
    };
    let chosen = alternative(p)?;
    let top = match p.get("top_logprobs") {
        Some(Value::Array(top)) => top.iter().map(alternative).collect::<Option<Vec<_>>>()?,
        _ => Vec::new(),
    };
    Some(Position {
        id: chosen.id,
        text: chosen.text,
        top,
    })
}

/// An OpenAI legacy position: the token's text and a `{text: logprob}` map (`null` for
/// a position the server gave none for).
fn legacy_position(token: &Value, top: &Value) -> Option<Position> {
    let text = token.as_str()?.to_string();
    let top = match top {
        Value::Object(map) => map
            .iter()
            .map(|(key, lp)| {
                Some(Alternative {
                    id: id_of(key),
                    text: key.clone(),
                    logprob: lp.as_f64()? as f32,
                })
            })
            .collect::<Option<Vec<_>>>()?,
        Value::Null => Vec::new(),
        _ => return None,
    };
    Some(Position {
        id: id_of(&text),
        text,
        top,
    })
}

/// The id in vLLM's `token_id:N`.
fn id_of(text: &str) -> Option<u32> {
    text.strip_prefix("token_id:")?.parse().ok()
}

impl Position {
    /// The log-probability of the token `id` (whose text is `text`) among the top ones;
    /// `None` if it is not among them.
    pub fn logprob_of(&self, id: u32, text: &str) -> Option<f32> {
        self.top
            .iter()
            .find(|a| match a.id {
                Some(a_id) => a_id == id,
                None => a.text == text,
            })
            .map(|a| a.logprob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llama_servers_shape() {
        let answer = json!({"choices": [{"text": " Safe", "finish_reason": "stop", "logprobs": {"content": [
            {"id": 22, "token": " Safe", "logprob": -0.1, "top_logprobs": [
                {"id": 22, "token": " Safe", "logprob": -0.1},
                {"id": 7, "token": " Unsafe", "logprob": -2.5}]}]}}]});
        let c = parse("u", &answer).unwrap();
        assert_eq!(c.ids(), Some(vec![22]));
        assert_eq!(c.positions[0].logprob_of(7, "?"), Some(-2.5));
        assert_eq!(c.positions[0].logprob_of(9, " Safe"), None);
        assert_eq!(c.finish_reason.as_deref(), Some("stop"));
    }

    #[test]
    fn reads_vllms_shape_with_ids_or_texts() {
        let answer = json!({"choices": [{"text": " Safe", "finish_reason": "length", "logprobs": {
            "tokens": ["token_id:22"], "token_logprobs": [-0.1],
            "top_logprobs": [{"token_id:22": -0.1, "token_id:7": -2.5}]}}]});
        let c = parse("u", &answer).unwrap();
        assert_eq!(c.ids(), Some(vec![22]));
        assert_eq!(c.positions[0].logprob_of(7, " Unsafe"), Some(-2.5));
        let texts = json!({"choices": [{"text": " Safe", "logprobs": {
            "tokens": [" Safe"], "top_logprobs": [{" Safe": -0.1, " Unsafe": -2.5}]}}]});
        let c = parse("u", &texts).unwrap();
        assert_eq!(c.ids(), None);
        assert_eq!(c.positions[0].logprob_of(7, " Unsafe"), Some(-2.5));
    }

    #[test]
    fn names_what_is_missing() {
        let cases = [
            (json!({}), "no choices[0]"),
            (json!({"choices": [{"logprobs": null}]}), "no text"),
            (
                json!({"choices": [{"text": "x", "logprobs": null}]}),
                "no logprobs",
            ),
            (json!({"choices": [{"text": "x"}]}), "no logprobs"),
            (
                json!({"choices": [{"text": "x", "logprobs": {"x": 1}}]}),
                "neither content",
            ),
            (
                json!({"choices": [{"text": "x", "logprobs": {"content": [{"id": 1}]}}]}),
                "malformed",
            ),
            (
                json!({"choices": [{"text": "x", "logprobs": {"tokens": ["a"], "top_logprobs": []}}]}),
                "differ",
            ),
        ];
        for (answer, expected) in cases {
            let e = parse("http://b", &answer).unwrap_err().to_string();
            assert!(
                e.contains(expected) && e.contains("http://b"),
                "{answer}: {e}"
            );
        }
    }
}
