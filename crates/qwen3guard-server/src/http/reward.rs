//! The reward endpoints: `POST /v1/reward` and OpenRLHF's `POST /get_reward`.
//!
//! Both judge every rollout's answer (and thinking) through the scheduler, all queued
//! before any is awaited so that they share the running Gen batch, while the helpfulness
//! server (hybrid reward, `--helpfulness-url`) is asked on a blocking thread at the same
//! time; then [`crate::reward::score`] turns each pair of verdicts into the reward.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use qwen3guard::{GenVerdict, Mode};
use serde::Serialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::handlers::{body, gen_name};
use super::openapi::{ErrorBody, GetRewardBody, RewardBody};
use super::{AppError, AppState};
use crate::reward::{self, chatml, Detail, Outcome, RewardKind, RewardSample};
use crate::scheduler::{answer, Command, GenOutcome};
use crate::validation;

type Answer = Result<Response, AppError>;

/// The answer of `/v1/reward`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Rewards {
    /// One reward per sample, in order.
    pub rewards: Vec<f64>,
    /// What the guard said about each sample.
    pub details: Vec<Detail>,
}

/// The answer of `/get_reward`, in the fields OpenRLHF reads.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenRlhfRewards {
    /// One reward per query.
    pub rewards: Vec<f64>,
    /// The same values (newer OpenRLHF versions read `scores` for filtering and logs).
    pub scores: Vec<f64>,
    /// Per-query values OpenRLHF logs: `guard_safe`, `guard_refusal` and
    /// `guard_unparsed`, each 1 or 0.
    #[schema(value_type = Object)]
    pub extra_logs: Value,
}

/// Where the hybrid reward's helpfulness values come from for one request.
struct HelpfulnessCall {
    /// The samples that had none, in order.
    missing: Vec<usize>,
    /// The blocking call's result.
    call: tokio::task::JoinHandle<Result<Vec<f64>, AppError>>,
}

/// Starts asking the helpfulness server for `missing` (the request's queries and prompts
/// for them), or returns `None` when nothing is missing.
fn ask_helpfulness(
    state: &AppState,
    missing: Vec<usize>,
    queries: Vec<String>,
    prompts: Vec<String>,
    labels: Option<Vec<Value>>,
) -> Result<Option<HelpfulnessCall>, AppError> {
    if missing.is_empty() {
        return Ok(None);
    }
    let Some(client) = state.helpfulness.clone() else {
        return Err(AppError::ModelNotLoaded(
            "the hybrid reward needs helpfulness values: start the server with \
             --helpfulness-url, or send them with the samples"
                .into(),
        ));
    };
    let call = tokio::task::spawn_blocking(move || {
        client
            .rewards(&queries, &prompts, labels.as_deref())
            .map_err(|e| AppError::Upstream(e.to_string()))
    });
    Ok(Some(HelpfulnessCall { missing, call }))
}

/// Judges `samples` (errors name `place[i]`) and scores them.
async fn score_all(
    state: &AppState,
    samples: &mut [RewardSample],
    (kind, mode, verdict_only): (RewardKind, Mode, bool),
    place: &str,
    helpfulness: Option<HelpfulnessCall>,
) -> Result<Vec<(f64, Detail)>, AppError> {
    let scheduler = state.scheduler()?;
    let (answer_options, thinking_options) = reward::options(kind, verdict_only);
    let submit = |conversation, options| {
        scheduler.submit(|reply| Command::Gen {
            conversation,
            options,
            category_scores: false,
            reply,
        })
    };
    // Everything is queued before anything is awaited, so that it all shares the batch;
    // if this handler is dropped (the client left) the receivers go, cancelling the rest.
    let mut pending = Vec::with_capacity(samples.len());
    for sample in samples.iter() {
        let (answer, thinking) = sample.conversations();
        pending.push((
            submit(answer, answer_options)?,
            thinking.map(|t| submit(t, thinking_options)).transpose()?,
        ));
    }
    let mut judged: Vec<(GenVerdict, Option<GenVerdict>)> = Vec::with_capacity(pending.len());
    for (i, (answer_rx, thinking_rx)) in pending.into_iter().enumerate() {
        let verdict = |outcome: GenOutcome| outcome.verdict;
        let at = |e: AppError| e.at(format!("{place}[{i}]"));
        let answered = answer(answer_rx).await.map_err(at)?;
        let thought = match thinking_rx {
            Some(rx) => Some(answer(rx).await.map_err(at)?),
            None => None,
        };
        judged.push((verdict(answered), thought.map(verdict)));
    }
    if let Some(HelpfulnessCall { missing, call }) = helpfulness {
        let values = call
            .await
            .map_err(|e| AppError::Upstream(format!("the helpfulness call failed: {e}")))??;
        for (i, value) in missing.into_iter().zip(values) {
            samples[i].helpfulness = Some(value);
        }
    }
    samples
        .iter()
        .zip(&judged)
        .enumerate()
        .map(|(i, (sample, (answer, thinking)))| {
            reward::score(kind, mode, answer, thinking.as_ref(), sample.helpfulness)
                .map_err(|e| AppError::Invalid(e.to_string()).at(format!("{place}[{i}]")))
        })
        .collect()
}

/// `POST /v1/reward`: the report's guard-only or hybrid reward for a batch of rollouts.
#[utoipa::path(post, path = "/v1/reward", tag = "reward", request_body = RewardBody, responses(
    (status = 200, description = "One reward and one detail per sample", body = Rewards),
    (status = 502, description = "The helpfulness server failed", body = ErrorBody),
    (status = 400, description = "Malformed or invalid body", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Body or input too large", body = ErrorBody), (status = 503, description = "Loading, busy (Retry-After) or shutting down", body = ErrorBody)))]
pub async fn reward(State(state): State<AppState>, raw: Result<Bytes, BytesRejection>) -> Answer {
    gen_name(&state)?;
    let request = validation::reward(
        &body(raw)?,
        state.config.limits.max_reward_samples,
        state.helpfulness.is_some(),
    )?;
    let mut samples = request.samples;
    let missing: Vec<usize> = match request.kind {
        RewardKind::Hybrid => (0..samples.len())
            .filter(|&i| samples[i].helpfulness.is_none())
            .collect(),
        RewardKind::GuardOnly => Vec::new(),
    };
    // The helpfulness server gets the rollouts rendered as OpenRLHF would send them.
    let (queries, prompts) = missing
        .iter()
        .map(|&i| {
            let s = &samples[i];
            let turns = s.prompt.messages();
            (
                chatml::render_query(turns, s.thinking.as_deref(), &s.response),
                chatml::render_prompt(turns),
            )
        })
        .unzip();
    let helpfulness = ask_helpfulness(&state, missing, queries, prompts, None)?;
    let mode = request.mode.unwrap_or(state.config.mode);
    let scored = score_all(
        &state,
        &mut samples,
        (request.kind, mode, request.verdict_only),
        "samples",
        helpfulness,
    )
    .await?;
    let (rewards, details) = scored.into_iter().unzip();
    Ok(Json(Rewards { rewards, details }).into_response())
}

/// `POST /get_reward`: OpenRLHF's remote reward protocol, with the server's `--reward`
/// formula and `--mode`.
#[utoipa::path(post, path = "/get_reward", tag = "reward", request_body = GetRewardBody, responses(
    (status = 200, description = "One reward per query", body = OpenRlhfRewards),
    (status = 502, description = "The helpfulness server failed", body = ErrorBody),
    (status = 400, description = "Malformed or invalid body, or a query that does not start with its prompt", body = ErrorBody), (status = 401, description = "Missing or wrong API key", body = ErrorBody), (status = 413, description = "Body or input too large", body = ErrorBody), (status = 503, description = "Loading, busy (Retry-After) or shutting down", body = ErrorBody)))]
pub async fn get_reward(
    State(state): State<AppState>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    gen_name(&state)?;
    let request = validation::get_reward(&body(raw)?, state.config.limits.max_reward_samples)?;
    let kind = state.config.reward;
    let mut samples: Vec<RewardSample> = request
        .rollouts
        .into_iter()
        .map(|r| RewardSample {
            prompt: r.prompt,
            response: r.answer,
            thinking: r.thinking,
            helpfulness: None,
        })
        .collect();
    let missing = match kind {
        RewardKind::Hybrid => (0..samples.len()).collect(),
        RewardKind::GuardOnly => Vec::new(),
    };
    let helpfulness = ask_helpfulness(
        &state,
        missing,
        request.queries,
        request.prompts,
        request.labels,
    )?;
    let scored = score_all(
        &state,
        &mut samples,
        (kind, state.config.mode, false),
        "query",
        helpfulness,
    )
    .await?;
    let flag = |test: &dyn Fn(&Detail) -> bool| -> Vec<f64> {
        scored
            .iter()
            .map(|(_, d)| f64::from(u8::from(test(d))))
            .collect()
    };
    let extra_logs = json!({
        "guard_safe": flag(&|d| d.outcome != Outcome::Unsafe),
        "guard_refusal": flag(&|d| d.refusal == Some(true)),
        "guard_unparsed": flag(&|d| !d.unparsed.is_empty()),
    });
    let rewards: Vec<f64> = scored.iter().map(|(r, _)| *r).collect();
    Ok(Json(OpenRlhfRewards {
        scores: rewards.clone(),
        rewards,
        extra_logs,
    })
    .into_response())
}
