//! A non-streamed answer: the upstream's completion judged whole before it is returned.
//! Flagged, its text stops where a streamed one would have (before the first token of the
//! flagged pair) and `finish_reason` says `content_filter`; everything else the upstream
//! sent (ids, usage, tool calls) is returned as it was.

use axum::http::HeaderMap;
use serde_json::{json, Value};

use super::chat::{message_texts, set_choice_field, set_texts, ChatRequest};
use super::judge::Judge;
use super::ledger::Ledger;
use super::{configured, gen_check};
use crate::http::{AppError, AppState};

/// Calls the upstream, judges its answer and returns the completion with the verdict.
pub async fn respond(
    state: &AppState,
    request: &ChatRequest,
    headers: &HeaderMap,
    mut judge: Judge,
    gen: bool,
) -> Result<Value, AppError> {
    let answer = judged(state, request, headers, &mut judge, gen).await;
    judge.close().await;
    answer
}

async fn judged(
    state: &AppState,
    request: &ChatRequest,
    headers: &HeaderMap,
    judge: &mut Judge,
    gen: bool,
) -> Result<Value, AppError> {
    let (_, client) = configured(state)?;
    let mut completion = client
        .complete(headers, &Value::Object(request.body.clone()))
        .await?;
    let (reasoning, content) = message_texts(&completion);
    // The ledger maps the judged text back to the two fields, as for a stream.
    let mut ledger = Ledger::new();
    let text = ledger.push(json!({"choices": [{"delta": {
        "reasoning_content": reasoning, "content": content}}]}));
    let appended = judge.feed(text, true).await?;
    let mut guard =
        json!({"checked_offset": appended.checked_offset, "verdict": appended.response});
    let mut stop = appended.stop.map(|s| (judge.cut_point(&s), s));
    // Gen reads the whole answer; flagged, none of it is returned.
    if gen && stop.is_none() {
        let conversation = gen_check::with_answer(&request.prompt, &content)?;
        if let Some(verdict) = gen_check::blocked(state, conversation).await? {
            guard["gen"] = verdict;
            stop = Some((0, appended.response.clone()));
        }
    }
    if let Some((cut, stop)) = stop {
        state
            .metrics
            .flagged(stop.category.iter().map(String::as_str));
        state.metrics.proxy_event("cut_off", 1);
        let kept_content = ledger.field_before(cut, true);
        let kept_reasoning = ledger.field_before(cut, false);
        let message = completion.pointer_mut("/choices/0/message");
        let reasoning_kept = (!reasoning.is_empty()).then_some(kept_reasoning.as_str());
        set_texts(message, reasoning_kept, Some(&kept_content));
        // Calls the model meant to make after a flagged answer are not made.
        if let Some(message) = completion
            .pointer_mut("/choices/0/message")
            .and_then(Value::as_object_mut)
        {
            message.remove("tool_calls");
        }
        set_choice_field(&mut completion, "finish_reason", json!("content_filter"));
        guard["verdict"] = json!(stop);
        guard["cut_offset"] = json!(cut);
    }
    if let Some(object) = completion.as_object_mut() {
        object.insert("qwen3guard".into(), guard);
    }
    Ok(completion)
}
