//! The remote Gen backend (`--gen-backend URL`): Gen's forward passes on an
//! OpenAI-compatible completions server (vLLM, SGLang, llama.cpp's `llama-server`)
//! instead of in this process.
//!
//! What stays here is everything that makes a verdict this library's: the prompt is
//! rendered to token ids by [`GenSpec`] (so a conversation cannot inject template markup
//! through the backend's own chat template: the backend gets ids, never text), the
//! generated ids are decoded and parsed by the library, and the label and category scores
//! are read at the same positions with the same definitions as in-process. The backend
//! only runs greedy completions of given ids and reports the top
//! [`wire::TOP_LOGPROBS`] log-probabilities at every position.
//!
//! A moderation is one completion (two when the answer does not start with `Safety:`,
//! whose scores are then read on the prompt with `Safety:` forced, as in-process); the
//! category scores of `/v1/moderations` one more. Requests run concurrently, at most
//! `--max-batch` at once (the backend batches them itself), with up to `--max-queue`
//! waiting; every failure is an [`UpstreamError`] mapped as the proxy maps it.
//!
//! Where the remote scores can differ from in-process ones: a token outside the top list
//! counts as probability 0. For the label scores (a softmax over the three label tokens)
//! that drops a label whose probability is below the list's last, which shifts the others
//! by less than that probability; if no label is in the list the backend is not serving a
//! Gen model (a Gen answer writes a label there), and the request fails with 502.

pub mod wire;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use qwen3guard::gen::{CategoryScore, GenSpec};
use qwen3guard::{Conversation, GenOptions, GenVerdict, Severity};
use tokio::sync::Semaphore;

use crate::config::Limits;
use crate::http::AppError;
use crate::proxy::upstream::{Upstream, UpstreamError};
use crate::proxy::ProxyConfig;
use crate::scheduler::GenOutcome;
use wire::{Completion, Position};

/// Where the remote backend is and how to call it (`--gen-backend*`).
#[derive(Debug, Clone)]
pub struct GenBackendConfig {
    /// The server's base URL, without `/v1`.
    pub url: String,
    /// The `model` field to send; `None`: the first of its `GET /v1/models`.
    pub model: Option<String>,
    /// The bearer key it wants.
    pub api_key: Option<String>,
    /// Longest wait for a connection and for each answer.
    pub timeout: Duration,
}

impl GenBackendConfig {
    /// The settings for `url` with the defaults (first model, no key, 60 s).
    pub fn new(url: &str) -> Self {
        GenBackendConfig {
            url: url.trim_end_matches('/').to_string(),
            model: None,
            api_key: None,
            timeout: Duration::from_secs(60),
        }
    }
}

/// A connected remote backend; cheap to clone.
#[derive(Clone)]
pub struct GenBackend {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    model: String,
    spec: GenSpec,
    client: Upstream,
    /// Requests in flight at most (`--max-batch`).
    slots: Semaphore,
    /// Requests waiting for a slot, refused beyond `max_waiting` (`--max-queue`).
    waiting: AtomicUsize,
    max_waiting: usize,
    probe_timeout: Duration,
}

impl std::fmt::Debug for GenBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenBackend")
            .field("url", &self.inner.url)
            .field("model", &self.inner.model)
            .finish()
    }
}

impl GenBackend {
    /// Checks that the backend answers and settles the model name (blocking: called
    /// while the models load, before the runtime serves requests).
    pub fn connect(
        config: &GenBackendConfig,
        spec: GenSpec,
        limits: &Limits,
    ) -> Result<Self, UpstreamError> {
        let url = format!("{}/v1/models", config.url);
        let agent = ureq::AgentBuilder::new().timeout(config.timeout).build();
        let mut request = agent.get(&url);
        if let Some(key) = &config.api_key {
            request = request.set("authorization", &format!("Bearer {key}"));
        }
        let listed = match request.call() {
            Ok(response) => response.into_json::<serde_json::Value>().map_err(|e| {
                UpstreamError::Malformed(format!("the model list of {url} is not JSON: {e}"))
            })?,
            Err(ureq::Error::Status(status, response)) => {
                return Err(UpstreamError::Status {
                    status,
                    body: response
                        .into_string()
                        .unwrap_or_default()
                        .chars()
                        .take(500)
                        .collect(),
                })
            }
            Err(e) => {
                return Err(UpstreamError::Unreachable {
                    url,
                    reason: e.to_string(),
                })
            }
        };
        let model = match &config.model {
            Some(model) => model.clone(),
            None => listed
                .pointer("/data/0/id")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| {
                    UpstreamError::Malformed(format!(
                        "{url} lists no model (data[0].id); name one with --gen-backend-model"
                    ))
                })?,
        };
        let proxy = ProxyConfig {
            api_key: config.api_key.clone(),
            timeout: config.timeout,
            ..ProxyConfig::new(&format!("{}/v1", config.url))
        };
        Ok(GenBackend {
            inner: Arc::new(Inner {
                url: config.url.clone(),
                model,
                spec,
                client: Upstream::new(&proxy, false),
                slots: Semaphore::new(limits.max_batch.max(1)),
                waiting: AtomicUsize::new(0),
                max_waiting: limits.max_queue.max(1),
                probe_timeout: limits.probe_timeout,
            }),
        })
    }

    /// The backend's base URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// The model name sent.
    pub fn model(&self) -> &str {
        &self.inner.model
    }

    /// Whether the backend answers `GET /v1/models` within the probe timeout.
    pub async fn probe(&self) -> Result<(), AppError> {
        let unavailable = |why: String| {
            AppError::Unavailable(format!(
                "the Gen backend {} does not answer: {why}",
                self.inner.url
            ))
        };
        let headers = HeaderMap::new();
        let models = self.inner.client.models(&headers);
        match tokio::time::timeout(self.inner.probe_timeout, models).await {
            Ok(Ok((status, _))) if (200..300).contains(&status) => Ok(()),
            Ok(Ok((status, _))) => Err(unavailable(format!("GET /v1/models answered {status}"))),
            Ok(Err(e)) => Err(unavailable(e.to_string())),
            Err(_) => Err(unavailable("the health probe timed out".into())),
        }
    }

    /// A moderation and, if asked, its category scores: what the scheduler's Gen lane
    /// gives in-process.
    pub async fn outcome(
        &self,
        conversation: &Conversation,
        options: &GenOptions,
        category_scores: bool,
    ) -> Result<GenOutcome, AppError> {
        let verdict = self.moderate(conversation, options).await?;
        let category_scores = if category_scores {
            let label = verdict.safety.unwrap_or_else(|| verdict.scores.best());
            Some(self.category_scores(conversation, label).await?)
        } else {
            None
        };
        Ok(GenOutcome {
            verdict,
            category_scores,
        })
    }

    /// [`qwen3guard::GenGuard::moderate`] with the forward passes on the backend.
    pub async fn moderate(
        &self,
        conversation: &Conversation,
        options: &GenOptions,
    ) -> Result<GenVerdict, AppError> {
        let spec = &self.inner.spec;
        let ids = spec.prompt_ids(conversation)?;
        let prefix = spec.safety_prefix();
        let mut forced = ids.clone();
        forced.extend(prefix);
        if options.verdict_only {
            // `Safety:` forced; the label scores at the first position. Decoding is
            // kept only where the in-process engine goes on (a label other than Safe,
            // or categories asked for), from `Safety:` on.
            let steps = options.max_new_tokens.saturating_sub(prefix.len()).max(1);
            let completion = self.complete(&forced, steps).await?;
            let scores = self.label_scores(completion.positions.first())?;
            let go_on = (scores.best() != Severity::Safe || options.categories)
                && options.max_new_tokens > 0;
            let generated = if go_on {
                let mut generated = prefix.to_vec();
                generated.extend(self.generated_ids(&completion)?);
                generated
            } else {
                Vec::new()
            };
            return Ok(spec.verdict(generated, scores, ids.len(), true)?);
        }
        let (generated, completion) = match options.max_new_tokens {
            0 => (Vec::new(), None),
            max => {
                let completion = self.complete(&ids, max).await?;
                (self.generated_ids(&completion)?, Some(completion))
            }
        };
        // The in-process engine reads the scores while decoding when the answer starts
        // with `Safety:` (at the position after it), else on the prompt with `Safety:`
        // forced: one more completion.
        let after_prefix = completion
            .as_ref()
            .filter(|_| generated.starts_with(prefix))
            .and_then(|c| c.positions.get(prefix.len()));
        let scores = match after_prefix {
            Some(position) => self.label_scores(Some(position))?,
            None => {
                let completion = self.complete(&forced, 1).await?;
                self.label_scores(completion.positions.first())?
            }
        };
        Ok(spec.verdict(generated, scores, ids.len(), false)?)
    }

    /// [`qwen3guard::GenGuard::category_scores`] from the backend's top log-probabilities
    /// after `Safety: <label>\nCategories:`; a category outside them scores 0.
    pub async fn category_scores(
        &self,
        conversation: &Conversation,
        label: Severity,
    ) -> Result<Vec<CategoryScore>, AppError> {
        let spec = &self.inner.spec;
        let mut ids = spec.render(conversation)?.token_ids;
        let prompt = spec.category_prompt(conversation.task(), label)?;
        let needed = ids.len() + prompt.forced_ids.len();
        if needed > spec.max_positions() {
            return Err(qwen3guard::Error::ContextTooLong {
                tokens: needed,
                max: spec.max_positions(),
            }
            .into());
        }
        ids.extend(&prompt.forced_ids);
        let completion = self.complete(&ids, 1).await?;
        let position = completion.positions.first().ok_or_else(|| {
            self.malformed("the completion after `Categories:` has no logprobs position")
        })?;
        prompt
            .first_ids
            .into_iter()
            .map(|(category, id)| {
                let text = self.token_text(id)?;
                let probability = position.logprob_of(id, &text).map_or(0.0, f32::exp);
                Ok(CategoryScore {
                    category,
                    probability,
                })
            })
            .collect()
    }

    /// One greedy completion of `prompt`, with a slot held while it runs.
    async fn complete(&self, prompt: &[u32], max_tokens: usize) -> Result<Completion, AppError> {
        let inner = &*self.inner;
        let waiting = inner.waiting.fetch_add(1, Ordering::Relaxed);
        if waiting >= inner.max_waiting {
            inner.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(AppError::Overloaded(waiting));
        }
        let permit = inner.slots.acquire().await;
        inner.waiting.fetch_sub(1, Ordering::Relaxed);
        let _permit =
            permit.map_err(|_| AppError::Unavailable("the Gen backend client is closed".into()))?;
        let body = wire::request(&inner.model, prompt, max_tokens, inner.spec.stop_ids());
        let answer = inner
            .client
            .post("completions", &body)
            .await
            .map_err(|e| self.named(e))?;
        let source = format!("the Gen backend's {}/v1/completions", inner.url);
        Ok(wire::parse(&source, &answer)?)
    }

    /// The generated ids as the in-process engine holds them: the server's ids (else the
    /// text re-tokenized), cut after the first stop token, and the stop token added when
    /// the server stopped on one without reporting it.
    fn generated_ids(&self, completion: &Completion) -> Result<Vec<u32>, AppError> {
        let stops = self.inner.spec.stop_ids();
        let mut ids = match completion.ids() {
            Some(ids) => ids,
            None => self
                .inner
                .spec
                .prompter()
                .tokenizer()
                .encode_text(&completion.text)?,
        };
        if let Some(end) = ids.iter().position(|id| stops.contains(id)) {
            ids.truncate(end + 1);
        } else if completion.finish_reason.as_deref() == Some("stop") {
            ids.push(stops[0]);
        }
        Ok(ids)
    }

    /// The label scores at `position`: a softmax over the three labels' log-probabilities,
    /// a label outside the top list counting as probability 0.
    fn label_scores(
        &self,
        position: Option<&Position>,
    ) -> Result<qwen3guard::gen::Scores, AppError> {
        let spec = &self.inner.spec;
        let position = position.ok_or_else(|| {
            self.malformed("the completion has no logprobs at the label position")
        })?;
        let mut found = [None; 3];
        for (slot, id) in found.iter_mut().zip(spec.label_ids()) {
            *slot = position.logprob_of(id, &self.token_text(id)?);
        }
        if found.iter().all(Option::is_none) {
            return Err(self.malformed(&format!(
                "none of Safe, Unsafe, Controversial is among the top {} log-probabilities \
                 after `Safety:`; is the backend serving a Qwen3Guard-Gen model?",
                wire::TOP_LOGPROBS
            )));
        }
        let labels = spec.label_ids();
        Ok(spec.label_scores(|id| labels.iter().position(|&l| l == id).and_then(|i| found[i])))
    }

    /// A token's text as servers write it in their top lists (for servers that give no
    /// ids).
    fn token_text(&self, id: u32) -> Result<String, AppError> {
        Ok(self
            .inner
            .spec
            .prompter()
            .tokenizer()
            .decode(&[id], false)?)
    }

    /// A failure of the backend, named as the Gen backend's (the proxy's messages say
    /// "upstream"), with the proxy's statuses.
    fn named(&self, e: UpstreamError) -> AppError {
        let url = &self.inner.url;
        match e {
            UpstreamError::Status { status, body } => AppError::UpstreamStatus {
                status,
                message: format!("the Gen backend {url} answered {status}: {body}"),
            },
            UpstreamError::Timeout { .. } => {
                AppError::UpstreamTimeout(format!("the Gen backend {url} failed: {e}"))
            }
            e => AppError::Upstream(format!("the Gen backend {url} failed: {e}")),
        }
    }

    fn malformed(&self, what: &str) -> AppError {
        UpstreamError::Malformed(format!("the Gen backend {}: {what}", self.inner.url)).into()
    }
}
