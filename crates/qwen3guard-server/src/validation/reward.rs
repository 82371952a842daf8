//! Bodies of the reward endpoints: `/v1/reward` samples (also the lines of
//! `qwen3guard reward`'s input) and OpenRLHF's `/get_reward`.

use qwen3guard::{Conversation, Mode, Role};
use serde_json::{Map, Value};

use super::{invalid, messages, object, only, optional_bool, optional_mode};
use crate::http::AppError;
use crate::reward::chatml::{self, Rollout, SplitError};
use crate::reward::{RewardKind, RewardSample};

/// The fields a `/v1/reward` body may have.
pub const REWARD_FIELDS: [&str; 4] = ["samples", "reward", "mode", "verdict_only"];
/// The fields one sample may have.
pub const SAMPLE_FIELDS: [&str; 4] = ["messages", "response", "thinking", "helpfulness"];
/// The fields of a `/get_reward` body that are read (OpenRLHF's; others are ignored, as a
/// client of a fixed protocol may add some).
pub const GET_REWARD_FIELDS: [&str; 3] = ["query", "prompts", "labels"];

/// `POST /v1/reward`.
#[derive(Debug, Clone)]
pub struct RewardRequest {
    /// The rollouts.
    pub samples: Vec<RewardSample>,
    /// The formula.
    pub kind: RewardKind,
    /// Overrides the server's mode (what Controversial means for the hybrid reward).
    pub mode: Option<Mode>,
    /// Guard-only: judge the answer from one pass's label scores.
    pub verdict_only: bool,
}

/// `POST /get_reward`.
#[derive(Debug, Clone)]
pub struct GetRewardRequest {
    /// The whole texts, as sent.
    pub queries: Vec<String>,
    /// Their prompts, as sent.
    pub prompts: Vec<String>,
    /// The labels, as sent (passed on to a helpfulness server, otherwise unused).
    pub labels: Option<Vec<Value>>,
    /// Each query read back into its turns, thinking and answer.
    pub rollouts: Vec<Rollout>,
}

/// Validates one sample. `place` names it in messages (`samples[3]` in a batch; empty
/// for a line of `qwen3guard reward`'s input, whose errors name the line instead).
pub fn reward_sample(map: &Map<String, Value>, place: &str) -> Result<RewardSample, AppError> {
    let prefix = match place {
        "" => String::new(),
        _ => format!("{place}."),
    };
    only(map, &SAMPLE_FIELDS).map_err(|e| match place {
        "" => e,
        _ => invalid(format!("`{place}`: {e}")),
    })?;
    let turns = messages(map, &prefix)?;
    if turns.last().map(|m| m.role) != Some(Role::User) {
        return Err(invalid(format!(
            "`{prefix}messages` must end with the user's turn; the answer goes in `{prefix}response`"
        )));
    }
    let prompt =
        Conversation::new(turns).map_err(|e| invalid(format!("`{prefix}messages`: {e}")))?;
    let text = |field: &str, required: bool| -> Result<Option<String>, AppError> {
        match map.get(field) {
            None | Some(Value::Null) if required => {
                Err(invalid(format!("missing field `{prefix}{field}`")))
            }
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("`{prefix}{field}` must be a string"))),
        }
    };
    let response = text("response", true)?.unwrap_or_default();
    let thinking = text("thinking", false)?;
    let helpfulness =
        match map.get("helpfulness") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| {
                invalid(format!("`{prefix}helpfulness` must be a number, not {v}"))
            })?),
        };
    Ok(RewardSample {
        prompt,
        response,
        thinking,
        helpfulness,
    })
}

/// A batch's array field: present, an array, not empty, not over `max`.
fn batch<'a>(
    map: &'a Map<String, Value>,
    field: &str,
    max: usize,
) -> Result<&'a [Value], AppError> {
    match map.get(field) {
        None => Err(invalid(format!("missing field `{field}`"))),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(invalid(format!("`{field}` is empty; send at least one")))
        }
        Some(Value::Array(items)) if items.len() > max => Err(invalid(format!(
            "`{field}` has {} entries; at most {max} per request (--max-reward-samples): \
             split the batch",
            items.len()
        ))),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(format!("`{field}` must be an array"))),
    }
}

/// Validates a `/v1/reward` body. `helpfulness_server` says whether the server can ask
/// for missing helpfulness values; without one, a hybrid sample must carry its own.
pub fn reward(
    body: &[u8],
    max_samples: usize,
    helpfulness_server: bool,
) -> Result<RewardRequest, AppError> {
    let map = object(body)?;
    only(&map, &REWARD_FIELDS)?;
    let kind = match map.get("reward") {
        None => {
            return Err(invalid(
                "missing field `reward` (\"guard_only\" or \"hybrid\")",
            ))
        }
        Some(Value::String(s)) => RewardKind::parse(s),
        Some(_) => None,
    }
    .ok_or_else(|| invalid("`reward` must be \"guard_only\" or \"hybrid\""))?;
    let verdict_only = optional_bool(&map, "verdict_only")?;
    if verdict_only && kind == RewardKind::Hybrid {
        return Err(invalid(
            "`verdict_only` is for the guard_only reward: the hybrid reward needs the refusal \
             line, which a label-only pass does not write for a Safe answer",
        ));
    }
    let samples = batch(&map, "samples", max_samples)?
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(sample) => reward_sample(sample, &format!("samples[{i}]")),
            _ => Err(invalid(format!("`samples[{i}]` must be an object"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if kind == RewardKind::Hybrid && !helpfulness_server {
        if let Some(i) = samples.iter().position(|s| s.helpfulness.is_none()) {
            return Err(invalid(format!(
                "missing field `samples[{i}].helpfulness`: the hybrid reward needs one per \
                 sample, or a server started with --helpfulness-url"
            )));
        }
    }
    Ok(RewardRequest {
        samples,
        kind,
        mode: optional_mode(&map)?,
        verdict_only,
    })
}

fn strings(items: &[Value], field: &str) -> Result<Vec<String>, AppError> {
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(invalid(format!("`{field}[{i}]` must be a string"))),
        })
        .collect()
}

/// Validates a `/get_reward` body and splits each query at its prompt.
pub fn get_reward(body: &[u8], max_samples: usize) -> Result<GetRewardRequest, AppError> {
    let map = object(body)?;
    let queries = strings(batch(&map, "query", max_samples)?, "query")?;
    let prompts = match map.get("prompts") {
        None => {
            return Err(invalid(
                "missing field `prompts` (one prompt text per query)",
            ))
        }
        Some(Value::Array(items)) => strings(items, "prompts")?,
        Some(_) => return Err(invalid("`prompts` must be an array of strings")),
    };
    if prompts.len() != queries.len() {
        return Err(invalid(format!(
            "`prompts` has {} entries for {} in `query`; give one prompt per query",
            prompts.len(),
            queries.len()
        )));
    }
    let labels = match map.get("labels") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if items.len() == queries.len() => Some(items.clone()),
        Some(Value::Array(items)) => {
            return Err(invalid(format!(
                "`labels` has {} entries for {} in `query`",
                items.len(),
                queries.len()
            )))
        }
        Some(_) => return Err(invalid("`labels` must be an array")),
    };
    let rollouts = queries
        .iter()
        .zip(&prompts)
        .enumerate()
        .map(|(i, (query, prompt))| {
            chatml::split(query, prompt).map_err(|e| match e {
                SplitError::NotPrefixed => invalid(format!(
                    "`query[{i}]` does not start with `prompts[{i}]`: each query must be its \
                     prompt followed by the response"
                )),
                other => invalid(format!("`prompts[{i}]`: {other}")),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(GetRewardRequest {
        queries,
        prompts,
        labels,
        rollouts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(r: Result<impl std::fmt::Debug, AppError>) -> String {
        r.unwrap_err().to_string()
    }

    const USER: &str = r#"[{"role":"user","content":"hi"}]"#;

    fn body(samples: &str, extra: &str) -> Vec<u8> {
        format!(r#"{{"reward":"hybrid","samples":{samples}{extra}}}"#).into_bytes()
    }

    #[test]
    fn bad_samples_are_named_by_index_and_field() {
        let r = |samples: &str| error(reward(&body(samples, ""), 4, false));
        assert!(r("[]").contains("`samples` is empty"));
        let one = format!(r#"{{"messages":{USER},"response":"x","helpfulness":1}}"#);
        let five = format!("[{}]", vec![one; 5].join(","));
        assert!(r(&five).contains("`samples` has 5 entries; at most 4"));
        assert!(r(&format!(r#"[{{"messages":{USER}}}]"#))
            .contains("missing field `samples[0].response`"));
        let ok = format!(r#"{{"messages":{USER},"response":"x","helpfulness":1}}"#);
        let bad_h = format!(r#"[{ok},{{"messages":{USER},"response":"x","helpfulness":"high"}}]"#);
        assert!(r(&bad_h).contains("`samples[1].helpfulness` must be a number"));
        let no_h = format!(r#"[{ok},{{"messages":{USER},"response":"x"}}]"#);
        assert!(r(&no_h).contains("missing field `samples[1].helpfulness`"));
        assert!(
            r(r#"[{"messages":[{"role":"bot","content":"x"}],"response":"x"}]"#)
                .contains("`samples[0].messages[0].role`")
        );
        assert!(r(&format!(
            r#"[{{"messages":{USER},"response":"x","helpfulness":1,"extra":2}}]"#
        ))
        .contains("`samples[0]`: unknown field `extra`"));
        let ends_with_answer = r#"[{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}],"response":"x","helpfulness":1}]"#;
        assert!(r(ends_with_answer).contains("`samples[0].messages` must end with the user's turn"));
        assert!(r(&format!(
            r#"[{{"messages":{USER},"response":7,"helpfulness":1}}]"#
        ))
        .contains("`samples[0].response` must be a string"));
        let kind = error(reward(br#"{"reward":"best","samples":[]}"#, 4, false));
        assert!(kind.contains("`reward`"));
        let label_only = error(reward(
            &body(&format!("[{ok}]"), r#","verdict_only":true"#),
            4,
            false,
        ));
        assert!(label_only.contains("`verdict_only` is for the guard_only reward"));
    }

    #[test]
    fn a_helpfulness_server_makes_the_sample_value_optional() {
        let samples = format!(r#"[{{"messages":{USER},"response":"x","thinking":"t"}}]"#);
        let request = reward(&body(&samples, r#","mode":"loose""#), 4, true).unwrap();
        assert_eq!(request.kind, RewardKind::Hybrid);
        assert_eq!(request.mode, Some(Mode::Loose));
        assert_eq!(request.samples[0].thinking.as_deref(), Some("t"));
        assert_eq!(request.samples[0].helpfulness, None);
    }

    #[test]
    fn get_reward_bodies_are_checked_and_split() {
        let prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n";
        let good =
            serde_json::json!({"query": [format!("{prompt}hello<|im_end|>")], "prompts": [prompt]});
        let request = get_reward(good.to_string().as_bytes(), 4).unwrap();
        assert_eq!(request.rollouts[0].answer, "hello");
        let mismatch =
            serde_json::json!({"query": ["a", format!("{prompt}x")], "prompts": ["a", "b"]});
        assert!(error(get_reward(mismatch.to_string().as_bytes(), 4))
            .contains("`query[1]` does not start with `prompts[1]`"));
        let short = serde_json::json!({"query": ["a"], "prompts": []});
        assert!(
            error(get_reward(short.to_string().as_bytes(), 4)).contains("`prompts` has 0 entries")
        );
        let labels = serde_json::json!({"query": ["a"], "prompts": ["a"], "labels": [1, 2]});
        assert!(
            error(get_reward(labels.to_string().as_bytes(), 4)).contains("`labels` has 2 entries")
        );
        assert!(error(get_reward(br#"{"query":[],"prompts":[]}"#, 4)).contains("`query` is empty"));
        assert!(error(get_reward(br#"{"query":[3],"prompts":["a"]}"#, 4))
            .contains("`query[0]` must be a string"));
    }
}
