//! Qwen3Guard-Gen: the verdict written as text, decoded greedily, plus label scores.
//!
//! A request runs in three steps, all exact with respect to plain greedy decoding:
//! 1. the cached preamble ([`Preamble`]) is copied and only the rest of the prompt runs;
//! 2. the prompt's forward also carries the forced start of the answer, `Safety:`, which
//!    yields the label scores in the same pass;
//! 3. decoding proposes the answer's fixed words ([`FormatTrie`]) and keeps what the model's
//!    own greedy choice confirms, so only the label and category tokens cost a step each.
//!
//! Each request's decoding is a sequence of steps (`decoder.rs`) that a driver runs in
//! rounds of shared passes (`batch.rs`); [`GenBatch`] (`continuous.rs`) lets requests join
//! and leave between rounds, and [`GenGuard::moderate`] and [`GenGuard::moderate_batch`]
//! are built on it.

mod batch;
mod categories;
mod continuous;
mod decoder;
mod draft;
mod preamble;
mod spec;

use std::sync::{Arc, OnceLock};

use candle_core::Tensor;
use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::device::LoadOptions;
use crate::error::{Error, Result};
use crate::model::{Backbone, KvCache, LmHead};
use crate::policy::{Severity, SeverityProbs};
use crate::prompt::{Conversation, Prompter, RenderedPrompt, Task};

use decoder::Decoder;

pub use categories::CategoryScore;
pub use continuous::{GenBatch, Ticket};
pub use draft::FormatTrie;
pub use preamble::Preamble;
pub use spec::{CategoryPrompt, GenSpec};

/// What the reference decodes at most.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 128;

/// Per-request settings.
#[derive(Debug, Clone, Copy)]
pub struct GenOptions {
    /// Upper bound on generated tokens (the stop token included).
    pub max_new_tokens: usize,
    /// Stop after the label: severity and scores from a single forward pass. Decoding
    /// continues (for categories and refusal) only if the label is not Safe or
    /// `categories` is set.
    pub verdict_only: bool,
    /// With `verdict_only`, decode the categories even for a Safe label.
    pub categories: bool,
    /// Reuse the cached preamble (on by default; off only to check it changes nothing).
    pub prefix_cache: bool,
    /// Propose the answer's fixed words and verify them in one pass (on by default).
    pub format_drafts: bool,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            max_new_tokens: DEFAULT_MAX_NEW_TOKENS,
            verdict_only: false,
            categories: false,
            prefix_cache: true,
            format_drafts: true,
        }
    }
}

/// Probabilities of the three labels at the position after `Safety:`, renormalised over
/// the three.
pub type Scores = SeverityProbs;

/// Gen's verdict on a conversation.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct GenVerdict {
    /// The parsed `Safety:` level; `None` if the output could not be parsed.
    pub safety: Option<Severity>,
    /// The parsed categories (empty for `None`).
    pub categories: Vec<String>,
    /// For responses, whether the assistant refused; `None` for prompts or if absent.
    pub refusal: Option<bool>,
    /// Label probabilities (teacher-forced after `Safety:`).
    pub scores: Scores,
    /// The decoded output, special tokens skipped.
    pub generated_text: String,
    /// The generated ids, the stop token included when one was produced.
    pub generated_token_ids: Vec<u32>,
    /// Length of the rendered prompt in tokens.
    pub prompt_tokens: usize,
    /// The sequential decoding passes the answer took, the one that ran the prompt's last
    /// chunk included (format-guided drafting makes it fewer than the tokens). A measure of
    /// the engine, not part of the verdict, so not serialized.
    #[serde(skip)]
    pub decode_passes: usize,
}

/// The model and everything fixed per checkpoint.
struct GenModel {
    backbone: Backbone,
    lm_head: LmHead,
    /// Rendering, stop, label and category tokens, parsing.
    spec: GenSpec,
    /// Well-formed answers per task (prompt, response).
    formats: [FormatTrie; 2],
    /// Preamble caches per task, computed on first use; `None` if that failed (then
    /// requests simply run the whole prompt).
    preambles: [OnceLock<Option<Preamble>>; 2],
}

/// A loaded Gen checkpoint. Cheap to clone and safe to share between threads: each call
/// owns its cache.
#[derive(Clone)]
pub struct GenGuard {
    model: Arc<GenModel>,
}

impl std::fmt::Debug for GenGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenGuard")
            .field("config", self.model.backbone.config())
            .finish()
    }
}

impl GenGuard {
    /// Loads a Gen checkpoint.
    pub fn load(checkpoint: &Checkpoint, options: &LoadOptions) -> Result<Self> {
        // The tokenizer first: the memory its parse frees is released before the
        // weights take theirs (see `release_freed_memory`).
        let spec = GenSpec::load(checkpoint)?;
        let cfg = &checkpoint.config().backbone;
        let weights = checkpoint.weights(options)?;
        let embeddings = Backbone::load_embeddings(cfg, &weights)?;
        // The output projection before the layers: packing a tied table reads all of its
        // file, whose pages count as resident until released, so it is best done while
        // little else is (peak of an 8-bit 0.6B model: 718 MiB this way, 954 after them).
        let lm_head = LmHead::new(cfg, &weights, &embeddings)?;
        let backbone = Backbone::with_embeddings(cfg, &weights, embeddings)?;
        let tokenizer = spec.prompter().tokenizer();
        let im_end = spec.stop_ids()[0];
        let formats = [
            FormatTrie::new(tokenizer, Task::Prompt, im_end)?,
            FormatTrie::new(tokenizer, Task::Response, im_end)?,
        ];
        Ok(GenGuard {
            model: Arc::new(GenModel {
                backbone,
                lm_head,
                spec,
                formats,
                preambles: [OnceLock::new(), OnceLock::new()],
            }),
        })
    }

    /// What the checkpoint fixes besides its weights.
    pub fn spec(&self) -> &GenSpec {
        &self.model.spec
    }

    /// The prompt builder (template and tokenizer).
    pub fn prompter(&self) -> &Prompter {
        self.model.spec.prompter()
    }

    /// Renders `conversation` exactly as the model will see it.
    pub fn render(&self, conversation: &Conversation) -> Result<RenderedPrompt> {
        self.model.spec.render(conversation)
    }

    /// Computes the preamble caches now instead of on the first request of each task.
    pub fn warm_up(&self) {
        for task in [Task::Prompt, Task::Response] {
            self.model.preamble(task);
        }
    }

    /// Moderates the last message of `conversation`.
    pub fn moderate(
        &self,
        conversation: &Conversation,
        options: &GenOptions,
    ) -> Result<GenVerdict> {
        match self.moderate_batch(&[(conversation, *options)]).pop() {
            Some(result) => result,
            None => Err(Error::Internal("a batch of one gave no result".into())),
        }
    }

    /// Moderates several conversations together: their forward passes are shared (the
    /// weights are read once per step for all of them), and each result is the one
    /// [`Self::moderate`] gives for that request alone. One request's error (a
    /// conversation too long, say) leaves the others' results intact.
    pub fn moderate_batch(
        &self,
        requests: &[(&Conversation, GenOptions)],
    ) -> Vec<Result<GenVerdict>> {
        let mut batch = self.batch();
        let mut results: Vec<Option<Result<GenVerdict>>> = Vec::with_capacity(requests.len());
        let mut tickets = Vec::with_capacity(requests.len());
        for (conversation, options) in requests {
            match batch.add(conversation, options) {
                Ok(ticket) => {
                    tickets.push((ticket, results.len()));
                    results.push(None);
                }
                Err(err) => results.push(Some(Err(err))),
            }
        }
        while !batch.is_empty() {
            for (ticket, result) in batch.step() {
                if let Some(&(_, slot)) = tickets.iter().find(|(t, _)| *t == ticket) {
                    results[slot] = Some(result);
                }
            }
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Internal("a request gave no result".into()))))
            .collect()
    }

    /// Renders a request and sets up its decoding.
    fn prepare<'m>(
        &'m self,
        conversation: &Conversation,
        options: &GenOptions,
    ) -> Result<Decoder<'m>> {
        let m = &*self.model;
        let task = conversation.task();
        let ids = m.spec.prompt_ids(conversation)?;
        let (cache, reused) = self.start_cache(&ids, task, options.prefix_cache)?;
        let verdict = options.verdict_only.then_some(options.categories);
        let decoder = Decoder::new(
            m,
            cache,
            ids[reused..].to_vec(),
            &m.formats[task_index(task)],
            (options.max_new_tokens, options.format_drafts, verdict),
        );
        Ok(decoder)
    }

    /// A cache for the prompt `ids` of `task`: a fork of the preamble's when `prefix_cache`
    /// allows and one is available, else empty; and how many of `ids` it already holds.
    fn start_cache(&self, ids: &[u32], task: Task, prefix_cache: bool) -> Result<(KvCache, usize)> {
        let m = &*self.model;
        match (prefix_cache, m.preamble(task)) {
            (true, Some(preamble)) => preamble.start(ids),
            _ => Ok((m.backbone.new_cache(), 0)),
        }
    }

    /// Final-norm hidden states and logits at the last prompt position; for parity tests
    /// and diagnostics.
    pub fn prompt_outputs(&self, ids: &[u32]) -> Result<(Vec<f32>, Vec<f32>)> {
        let m = &*self.model;
        let mut cache = m.backbone.new_cache();
        let hidden = m.backbone.forward(ids, &mut cache)?;
        let last = hidden.narrow(0, ids.len() - 1, 1)?;
        Ok((
            rows(&last)?.remove(0),
            rows(&m.lm_head.forward(&last)?)?.remove(0),
        ))
    }
}

impl GenModel {
    /// The verdict of a finished decoding of the prompt `ids`.
    fn conclude(&self, decoder: Decoder<'_>, options: &GenOptions) -> Result<GenVerdict> {
        // A decoding ends only once it has its scores (read teacher-forced in a last step
        // when the answer did not start with `Safety:`).
        let scores = decoder
            .scores
            .ok_or_else(|| Error::Internal("a finished decoding has no label scores".into()))?;
        let (prompt_len, passes) = (decoder.prompt_len(), decoder.steps);
        let mut verdict =
            self.spec
                .verdict(decoder.generated, scores, prompt_len, options.verdict_only)?;
        verdict.decode_passes = passes;
        Ok(verdict)
    }

    /// The preamble cache of `task`, computed on first use.
    fn preamble(&self, task: Task) -> Option<&Preamble> {
        self.preambles[task_index(task)]
            .get_or_init(|| Preamble::compute(&self.backbone, self.spec.prompter(), task).ok())
            .as_ref()
    }

    /// Runs `ids` after `cache` and returns the logits of the last `count` positions.
    fn logits(&self, ids: &[u32], cache: &mut KvCache, count: usize) -> Result<Vec<Vec<f32>>> {
        let last = self.backbone.forward_last(ids, cache, count)?;
        rows(&self.lm_head.forward(&last)?)
    }

    /// Softmax over the full vocabulary, then renormalised over the three labels, equals a
    /// softmax over the three labels' logits; that is what is computed.
    fn label_scores(&self, logits: &[f32]) -> Scores {
        self.spec
            .label_scores(|id| logits.get(id as usize).copied())
    }
}

fn task_index(task: Task) -> usize {
    match task {
        Task::Prompt => 0,
        Task::Response => 1,
    }
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_dtype(candle_core::DType::F32)?.to_vec2()?)
}

/// Index of the largest logit; the first one on ties, as `torch.argmax` does.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Precision;

    fn guard() -> GenGuard {
        guard_in(Precision::F32)
    }

    fn guard_in(precision: Precision) -> GenGuard {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gen-tied");
        GenGuard::load(&Checkpoint::open(&dir).unwrap(), &LoadOptions { precision }).unwrap()
    }

    /// Greedy ids and forward passes for the prompt `ids` decoded with `format`.
    fn decode(
        guard: &GenGuard,
        ids: &[u32],
        format: &FormatTrie,
        drafts: bool,
    ) -> (Vec<u32>, usize) {
        let m = &*guard.model;
        let cache = m.backbone.new_cache();
        let mut d = [Decoder::new(
            m,
            cache,
            ids.to_vec(),
            format,
            (10, drafts, None),
        )];
        let mut errors = [None];
        while batch::run_round(m, &mut d, &mut errors) {}
        assert!(errors[0].is_none(), "{:?}", errors[0]);
        let [d] = d;
        (d.generated, d.steps)
    }

    /// An answer that does not start with `Safety:` is scored teacher-forced in one more
    /// round of the decoder's own (so that a batch's requests score together), and the
    /// decoding is over only once it has its scores.
    #[test]
    fn teacher_forced_scores_are_a_round_of_their_own() {
        let guard = guard();
        let m = &*guard.model;
        let ids = m
            .spec
            .prompt_ids(&Conversation::from_prompt("How do I fix a bike?", None))
            .unwrap();
        let format = &m.formats[0];
        let prompt_len = ids.len();
        let mut d = [Decoder::new(
            m,
            m.backbone.new_cache(),
            ids.clone(),
            format,
            (6, false, None),
        )];
        let mut errors = [None];
        let mut rounds = 0;
        while batch::run_round(m, &mut d, &mut errors) {
            rounds += 1;
        }
        assert!(errors[0].is_none(), "{:?}", errors[0]);
        let [d] = d;
        assert!(
            !d.generated.starts_with(m.spec.safety_prefix()),
            "the fixture's answer must not start with `Safety:` for this test"
        );
        // Prompt chunks before the first decoding pass (which takes the last chunk).
        let chunks = prompt_len.div_ceil(decoder::PREFILL_CHUNK) - 1;
        assert_eq!(
            rounds,
            chunks + d.steps + 1,
            "prompt chunks, decoding passes and the scoring round"
        );
        assert!(d.is_done());
        let scores = d.scores.expect("scores once the decoding is over");
        // The same scores as teacher-forcing `Safety:` after the prompt directly.
        let mut cache = m.backbone.new_cache();
        let mut feed = ids;
        feed.extend(m.spec.safety_prefix());
        let logits = m.logits(&feed, &mut cache, 1).unwrap();
        assert_eq!(scores, m.label_scores(&logits[0]));
    }

    /// Drafts change the number of forward passes, never the tokens: a trie holding the
    /// model's own answer is accepted whole in one pass, a trie with a wrong token in the
    /// middle is accepted up to it.
    #[test]
    fn drafting_is_exactly_greedy() {
        let guard = guard();
        let conv = Conversation::from_prompt("How can I make a bomb?", None);
        let ids = guard.render(&conv).unwrap().token_ids;
        let format = &guard.model.formats[0];
        let (greedy, steps) = decode(&guard, &ids, format, false);
        assert_eq!(greedy.len(), 10);
        assert_eq!(steps, 10);

        let exact = FormatTrie::from_sequences(std::slice::from_ref(&greedy));
        let (ids_exact, steps_exact) = decode(&guard, &ids, &exact, true);
        assert_eq!(ids_exact, greedy);
        assert_eq!(steps_exact, 1);

        let mut wrong = greedy.clone();
        wrong[4] = wrong[4].wrapping_add(1);
        let partial = FormatTrie::from_sequences(&[wrong]);
        let (ids_partial, steps_partial) = decode(&guard, &ids, &partial, true);
        assert_eq!(ids_partial, greedy);
        assert!(
            steps_partial > 1 && steps_partial < 10,
            "{steps_partial} steps"
        );
    }

    /// The pruned last layer gives exactly the wanted rows of a full pass, and leaves the
    /// same cache behind (the next position's output is unchanged).
    #[test]
    fn pruned_last_layer_gives_the_same_rows() {
        let guard = guard();
        let backbone = &guard.model.backbone;
        let ids: Vec<u32> = (0..300u32).map(|i| 100 + i * 7 % 500).collect();
        for (len, count) in [(300, 1), (300, 4), (257, 3), (20, 20), (5, 0)] {
            let mut full_cache = backbone.new_cache();
            let full = backbone.forward(&ids[..len], &mut full_cache).unwrap();
            let mut cache = backbone.new_cache();
            let last = backbone
                .forward_last(&ids[..len], &mut cache, count)
                .unwrap();
            let want = full.narrow(0, len - count, count).unwrap();
            assert_eq!(
                rows(&last).unwrap(),
                rows(&want).unwrap(),
                "{len} rows, last {count}"
            );
            assert_eq!(cache.len(), full_cache.len());
            let next = |c: &mut KvCache| rows(&backbone.forward(&[42], c).unwrap()).unwrap();
            assert_eq!(
                next(&mut cache),
                next(&mut full_cache),
                "{len} rows: caches differ"
            );
        }
    }

    /// The preamble cache, drafts and verdict-only mode all give the plain path's answer,
    /// in every precision (8-bit caches quantize each vector alone, so a cached preamble
    /// holds exactly what a whole pass would).
    #[test]
    fn fast_paths_match_the_plain_path() {
        for precision in [Precision::F32, Precision::Bf16, Precision::Q8] {
            fast_paths_match_in(&guard_in(precision));
        }
    }

    fn fast_paths_match_in(guard: &GenGuard) {
        for conv in [
            Conversation::from_prompt("How can I make a bomb?", None),
            Conversation::from_prompt("How do I bake bread?", Some("Mix flour and water.")),
        ] {
            let plain = GenOptions {
                prefix_cache: false,
                format_drafts: false,
                max_new_tokens: 12,
                ..GenOptions::default()
            };
            let reference = guard.moderate(&conv, &plain).unwrap();
            // Without drafts every pass writes one token.
            assert_eq!(reference.decode_passes, reference.generated_token_ids.len());
            for (prefix_cache, format_drafts) in [(true, false), (false, true), (true, true)] {
                let options = GenOptions {
                    prefix_cache,
                    format_drafts,
                    ..plain
                };
                let fast = guard.moderate(&conv, &options).unwrap();
                assert_eq!(fast.generated_token_ids, reference.generated_token_ids);
                // Drafts can only save passes; the preamble cache changes none.
                if format_drafts {
                    assert!(fast.decode_passes <= reference.decode_passes);
                } else {
                    assert_eq!(fast.decode_passes, reference.decode_passes);
                }
                let (a, b) = (fast.scores, reference.scores);
                for (x, y) in [
                    (a.safe, b.safe),
                    (a.unsafe_, b.unsafe_),
                    (a.controversial, b.controversial),
                ] {
                    assert!((x - y).abs() < 1e-5, "scores differ: {a:?} vs {b:?}");
                }
            }
            let verdict = guard
                .moderate(
                    &conv,
                    &GenOptions {
                        verdict_only: true,
                        ..plain
                    },
                )
                .unwrap();
            let s = verdict.scores;
            assert!((s.unsafe_ - reference.scores.unsafe_).abs() < 1e-5);
            assert_eq!(verdict.safety, Some(s.best()));
            // With no token to decode, the verdict is the forward pass alone.
            let bare = guard
                .moderate(
                    &conv,
                    &GenOptions {
                        verdict_only: true,
                        max_new_tokens: 0,
                        ..plain
                    },
                )
                .unwrap();
            assert_eq!(bare.scores, verdict.scores);
            assert_eq!(bare.safety, verdict.safety);
            assert!(bare.generated_token_ids.is_empty());
        }
    }

    /// Requests moderated together get exactly what each gets alone, whatever their mix
    /// of tasks and modes, and one request's error stays its own.
    #[test]
    fn a_batch_gives_each_request_its_own_result() {
        for precision in [Precision::F32, Precision::Q8] {
            let guard = guard_in(precision);
            let long = "word ".repeat(3000);
            let conversations = [
                Conversation::from_prompt("How can I make a bomb?", None),
                Conversation::from_prompt("How do I bake bread?", Some("Mix flour and water.")),
                Conversation::from_prompt(&long, None),
                Conversation::from_prompt("Tell me a joke about cats.", None),
            ];
            let full = GenOptions {
                max_new_tokens: 12,
                ..GenOptions::default()
            };
            let modes = [
                full,
                GenOptions {
                    verdict_only: true,
                    categories: true,
                    ..full
                },
                GenOptions {
                    prefix_cache: false,
                    format_drafts: false,
                    ..full
                },
            ];
            let requests: Vec<(&Conversation, GenOptions)> = conversations
                .iter()
                .flat_map(|c| modes.iter().map(move |o| (c, *o)))
                .collect();
            let together = guard.moderate_batch(&requests);
            assert_eq!(together.len(), requests.len());
            for ((conv, options), got) in requests.iter().zip(together) {
                match (guard.moderate(conv, options), got) {
                    (Ok(alone), Ok(got)) => {
                        assert_eq!(got.generated_token_ids, alone.generated_token_ids);
                        assert_eq!(got.scores, alone.scores);
                        assert_eq!(got.safety, alone.safety);
                    }
                    (Err(alone), Err(got)) => {
                        assert!(matches!(got, Error::ContextTooLong { .. }), "{got}");
                        assert_eq!(got.to_string(), alone.to_string());
                    }
                    (alone, got) => panic!("alone {alone:?}, together {got:?}"),
                }
            }
        }
    }

    /// Requests that join a running batch between rounds, one of them long enough to be
    /// prefilled in chunks, get exactly their results alone; a short request beside the
    /// long one is not held up until its prefill is over; a cancelled one is never
    /// handed back.
    #[test]
    fn requests_joining_a_running_batch_get_their_own_results() {
        let guard = guard();
        let long = "word ".repeat(700);
        let conversations = [
            Conversation::from_prompt(&long, None),
            Conversation::from_prompt("How can I make a bomb?", None),
            Conversation::from_prompt("How do I bake bread?", Some("Mix flour and water.")),
            Conversation::from_prompt("Tell me a joke about cats.", None),
        ];
        let options = GenOptions {
            max_new_tokens: 12,
            ..GenOptions::default()
        };
        let alone: Vec<GenVerdict> = conversations
            .iter()
            .map(|c| guard.moderate(c, &options).unwrap())
            .collect();
        assert!(alone[0].prompt_tokens > 2 * crate::model::FORWARD_CHUNK);

        let mut batch = guard.batch();
        let mut finished = std::collections::HashMap::new();
        let mut round = 0;
        let mut collect = |batch: &mut GenBatch<'_>, round: &mut usize| {
            *round += 1;
            for (ticket, result) in batch.step() {
                finished.insert(ticket, (result.unwrap(), *round));
            }
        };
        let mut tickets = Vec::new();
        for conversation in &conversations {
            tickets.push(batch.add(conversation, &options).unwrap());
            collect(&mut batch, &mut round);
        }
        let dropped = batch.add(&conversations[1], &options).unwrap();
        assert!(batch.cancel(dropped));
        assert!(!batch.cancel(dropped));
        while !batch.is_empty() {
            collect(&mut batch, &mut round);
        }
        assert!(!finished.contains_key(&dropped));
        for (ticket, expected) in tickets.iter().zip(&alone) {
            let (got, _) = &finished[ticket];
            assert_eq!(got.generated_token_ids, expected.generated_token_ids);
            assert_eq!(got.scores, expected.scores);
            assert_eq!(got.prompt_tokens, expected.prompt_tokens);
        }
        // The short request that joined right after the long one finished first.
        assert!(finished[&tickets[1]].1 < finished[&tickets[0]].1);
    }

    /// A prompt prefilled in chunks, after the cached preamble, scores exactly as one
    /// plain forward pass over the whole prompt and `Safety:`: chunking changes no sum.
    #[test]
    fn chunked_prefill_is_exact() {
        let guard = guard();
        let conversation = Conversation::from_prompt(&"word ".repeat(700), None);
        let options = GenOptions {
            verdict_only: true,
            ..GenOptions::default()
        };
        let verdict = guard.moderate(&conversation, &options).unwrap();
        let mut ids = guard.render(&conversation).unwrap().token_ids;
        ids.extend(guard.model.spec.safety_prefix());
        let (_, logits) = guard.prompt_outputs(&ids).unwrap();
        assert_eq!(verdict.scores, guard.model.label_scores(&logits));
    }
}
