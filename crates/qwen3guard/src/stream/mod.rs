//! Qwen3Guard-Stream: token-level moderation with stateful sessions.
//!
//! [`StreamGuard`] holds the immutable model; [`StreamSession`] holds one conversation's
//! cache and verdicts. A session is opened on the conversation up to the user's turn (the
//! prompt verdict comes from the query heads at the `<|im_end|>` closing that turn); the
//! response is then appended token by token or in chunks, each append running only the new
//! positions.

mod debounce;
mod session;
mod verdict;

use std::sync::Arc;

pub use debounce::{Debouncer, Trigger};
pub use session::StreamSession;
pub use verdict::{PromptVerdict, ResponseVerdict, RiskProbs, StreamReport, TokenVerdict};

use crate::checkpoint::{Checkpoint, GuardHeadsConfig, LabelMap, Variant};
use crate::device::LoadOptions;
use crate::error::{Error, Result};
use crate::model::{Backbone, GuardHeads, HeadOutput};
use crate::policy::Severity;
use crate::prompt::{Conversation, Message, Prompter, RenderOptions, Role};

/// A conversation rendered for streaming, with the positions that matter.
#[derive(Debug, Clone)]
pub struct Exchange {
    ids: Vec<u32>,
    user_end: usize,
    response_start: Option<usize>,
}

/// Everything fixed per checkpoint.
pub(crate) struct StreamModel {
    pub(crate) backbone: Backbone,
    pub(crate) heads: GuardHeads,
    pub(crate) labels: GuardHeadsConfig,
    /// Row of each severity in the risk heads' output (response, query).
    pub(crate) response_risk_rows: [usize; 3],
    pub(crate) query_risk_rows: [usize; 3],
    pub(crate) prompter: Prompter,
    im_start: u32,
    im_end: u32,
    think_open: Option<u32>,
    think_close: Option<u32>,
    assistant_id: u32,
    user_id: u32,
    newline: Vec<u32>,
}

/// A loaded Stream checkpoint. Cheap to clone and shareable: sessions own their state.
#[derive(Clone)]
pub struct StreamGuard {
    model: Arc<StreamModel>,
}

impl StreamGuard {
    /// Loads a Stream checkpoint.
    pub fn load(checkpoint: &Checkpoint, options: &LoadOptions) -> Result<Self> {
        let config = checkpoint.config();
        let labels = match (config.variant, &config.heads) {
            (Variant::Stream, Some(heads)) => heads.clone(),
            _ => {
                return Err(Error::WrongVariant {
                    expected: Variant::Stream.name(),
                    found: config.variant.name(),
                    needed: "token-level streaming moderation",
                })
            }
        };
        let cfg = &config.backbone;
        // The tokenizer first: the memory its parse frees is released before the
        // weights take theirs (see `release_freed_memory`).
        let prompter = checkpoint.prompter()?;
        let weights = checkpoint.weights(options)?;
        let backbone = Backbone::new(cfg, &weights)?;
        let heads = GuardHeads::new(cfg, &labels, &weights)?;
        let tok = prompter.tokenizer();
        let marker = |m: &str| {
            tok.marker_id(m)
                .ok_or_else(|| Error::Tokenizer(format!("the tokenizer has no {m} token")))
        };
        let single = |text: &str| -> Result<u32> {
            match tok.encode_text(text)?.as_slice() {
                [id] => Ok(*id),
                _ => Err(Error::Tokenizer(format!("{text:?} is not a single token"))),
            }
        };
        let model = StreamModel {
            response_risk_rows: severity_rows(&labels.response_risk, "response_risk_level_map")?,
            query_risk_rows: severity_rows(&labels.query_risk, "query_risk_level_map")?,
            im_start: marker("<|im_start|>")?,
            im_end: marker("<|im_end|>")?,
            think_open: tok.marker_id("<think>"),
            think_close: tok.marker_id("</think>"),
            assistant_id: single("assistant")?,
            user_id: single("user")?,
            newline: tok.encode_text("\n")?,
            backbone,
            heads,
            labels,
            prompter,
        };
        Ok(StreamGuard {
            model: Arc::new(model),
        })
    }

    /// The prompt builder (template and tokenizer).
    pub fn prompter(&self) -> &Prompter {
        &self.model.prompter
    }

    /// The model's context length.
    pub fn max_positions(&self) -> usize {
        self.model.backbone.config().max_position_embeddings
    }

    /// Renders `conversation` and locates the prompt's end and the response's start.
    pub fn render_exchange(&self, conversation: &Conversation) -> Result<Exchange> {
        let m = &*self.model;
        let options = RenderOptions {
            add_generation_prompt: false,
            enable_thinking: Some(false),
        };
        let ids = m.prompter.render(conversation, options)?.token_ids;
        let starts_turn =
            |i: usize, role: u32| ids[i] == m.im_start && ids.get(i + 1) == Some(&role);
        let user_start = (0..ids.len())
            .rev()
            .find(|&i| starts_turn(i, m.user_id))
            .ok_or_else(|| Error::Conversation("the conversation has no user message".into()))?;
        let user_end = (user_start..ids.len())
            .find(|&i| ids[i] == m.im_end)
            .ok_or_else(|| Error::Template("the user turn is not closed by <|im_end|>".into()))?;
        let assistant = (user_end..ids.len()).find(|&i| starts_turn(i, m.assistant_id));
        let response_start = assistant.map(|a| m.response_start(&ids, a));
        Ok(Exchange {
            ids,
            user_end,
            response_start,
        })
    }

    /// Opens a session on a conversation that ends with the user's message and returns it
    /// with the prompt verdict computed.
    pub fn open(&self, conversation: &Conversation) -> Result<StreamSession> {
        if conversation.messages().last().map(|m| m.role) != Some(Role::User) {
            return Err(Error::Conversation(
                "open a stream session on the conversation up to the user's message; \
                 stream the response with append"
                    .into(),
            ));
        }
        let exchange = self.render_exchange(conversation)?;
        self.open_exchange(&exchange)
    }

    /// The tokens that open the assistant's turn after the prompt, up to where its own
    /// text starts: `\n<|im_start|>assistant\n` then the empty think block (`thinking`
    /// false) or `<think>\n` (`thinking` true, the reasoning follows).
    pub fn assistant_header(&self, thinking: bool) -> Result<Vec<u32>> {
        let m = &*self.model;
        let probe = Conversation::new(vec![
            Message::new(Role::User, "x"),
            Message::new(Role::Assistant, ""),
        ])?;
        let exchange = self.render_exchange(&probe)?;
        let start = exchange.response_start.unwrap_or(exchange.ids.len());
        let mut header = exchange.ids[exchange.user_end + 1..start].to_vec();
        if thinking {
            let open = header
                .iter()
                .position(|&id| Some(id) == m.think_open)
                .ok_or_else(|| Error::Template("the template writes no <think> block".into()))?;
            header.truncate(open + 1);
            header.extend(&m.newline);
        }
        Ok(header)
    }

    /// Appends `ids[i]` to `sessions[i]` for every `i` in one forward pass: the weight
    /// products take every session's new rows at once, so the weights are read once for
    /// the whole batch (a server's scheduler serves many live streams this way); each
    /// session's verdicts are those a plain [`StreamSession::append`] gives, and land in
    /// its [`StreamSession::tokens`]. Empty id lists are skipped. On error every session is
    /// unchanged.
    pub fn append_batch(&self, sessions: &mut [&mut StreamSession], ids: &[&[u32]]) -> Result<()> {
        session::append_batch(&self.model, sessions, ids)
    }

    /// Opens a session on conversation tokens that are already tokenized (for example by
    /// the client), ending with the `<|im_end|>` that closes the user turn; the prompt
    /// verdict is read at the last id.
    pub fn open_ids(&self, prompt_ids: &[u32]) -> Result<StreamSession> {
        if prompt_ids.is_empty() {
            return Err(Error::NoTokens("opening a stream session"));
        }
        StreamSession::open(self.model.clone(), prompt_ids)
    }

    /// Opens a session on the prompt part of `exchange` (up to the user turn's
    /// `<|im_end|>`), with the response start taken from the exchange; append
    /// [`Exchange::response_ids`] to stream the rest.
    pub fn open_exchange(&self, exchange: &Exchange) -> Result<StreamSession> {
        let max = self.max_positions();
        if exchange.ids.len() > max {
            return Err(Error::ContextTooLong {
                tokens: exchange.ids.len(),
                max,
            });
        }
        let mut session =
            StreamSession::open(self.model.clone(), &exchange.ids[..=exchange.user_end])?;
        if let Some(start) = exchange.response_start {
            session.set_response_start(start);
        }
        Ok(session)
    }

    /// Moderates a whole conversation as a stream: the prompt verdict, then the rest
    /// appended `chunk` tokens at a time (`chunk` 0 means all at once). The verdicts do not
    /// depend on `chunk`.
    pub fn moderate(&self, conversation: &Conversation, chunk: usize) -> Result<StreamReport> {
        let exchange = self.render_exchange(conversation)?;
        let mut session = self.open_exchange(&exchange)?;
        if exchange.response_start.is_none() {
            // Nothing to stream: what follows the prompt is the template's closing
            // newline, not a response, and must not be reported as one.
            return Ok(session.report());
        }
        let rest = exchange.response_ids();
        let step = if chunk == 0 { rest.len().max(1) } else { chunk };
        for piece in rest.chunks(step) {
            session.append(piece)?;
        }
        Ok(session.report())
    }
}

impl Exchange {
    /// Token ids of the whole conversation (Qwen3 template, thinking off).
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// Index of the `<|im_end|>` closing the last user turn.
    pub fn user_end(&self) -> usize {
        self.user_end
    }

    /// First token of the assistant's own text (evaluation's split index), if a response
    /// follows the last user turn.
    pub fn response_start(&self) -> Option<usize> {
        self.response_start
    }

    /// Moves the response's start to `index` (an evaluation that splits the response
    /// its own way); it must lie after the prompt and within the conversation.
    pub fn set_response_start(&mut self, index: usize) -> Result<()> {
        if index <= self.user_end || index > self.ids.len() {
            return Err(Error::Conversation(format!(
                "the response cannot start at token {index}: the prompt ends at {} and the \
                 conversation at {}",
                self.user_end,
                self.ids.len()
            )));
        }
        self.response_start = Some(index);
        Ok(())
    }

    /// The tokens after the prompt: the assistant header, its text, the closing markers.
    pub fn response_ids(&self) -> &[u32] {
        &self.ids[self.user_end + 1..]
    }
}

impl StreamModel {
    /// The official split: thinking responses start inside the think block (`assistant`
    /// + 4), others after the `</think>` `\n\n` pair.
    fn response_start(&self, ids: &[u32], assistant_start: usize) -> usize {
        let assistant = assistant_start + 1;
        let turn_end = (assistant..ids.len())
            .find(|&i| ids[i] == self.im_end)
            .unwrap_or(ids.len());
        let close = (assistant..turn_end).find(|&i| Some(ids[i]) == self.think_close);
        let open = (assistant..turn_end).find(|&i| Some(ids[i]) == self.think_open);
        match (open, close) {
            // An empty think block (`<think>\n\n</think>`) is non-thinking mode.
            (Some(o), Some(c)) if c > o + 2 => assistant + 4,
            (_, Some(c)) => c + 2,
            _ => assistant + 2,
        }
        .min(ids.len())
    }

    /// Per-position outputs of the response heads for `hidden (n, hidden)`.
    pub(crate) fn response_heads(&self, hidden: &candle_core::Tensor) -> Result<HeadOutput> {
        self.heads.response.forward(hidden)
    }

    /// Query-head outputs.
    pub(crate) fn query_heads(&self, hidden: &candle_core::Tensor) -> Result<HeadOutput> {
        self.heads.query.forward(hidden)
    }

    /// The risk labels must be exactly Safe / Unsafe / Controversial in some order.
    pub(crate) fn severity_of(rows: &[usize; 3], argmax: usize) -> Severity {
        match rows.iter().position(|&r| r == argmax) {
            Some(1) => Severity::Unsafe,
            Some(2) => Severity::Controversial,
            _ => Severity::Safe,
        }
    }
}

/// Rows of Safe, Unsafe, Controversial in a risk label map.
fn severity_rows(map: &LabelMap, key: &str) -> Result<[usize; 3]> {
    let row = |s: Severity| {
        map.0.iter().position(|l| l == s.as_str()).ok_or_else(|| {
            Error::Unsupported(format!(
                "`{key}` has no {:?} label; expected Safe, Unsafe and Controversial",
                s.as_str()
            ))
        })
    };
    if map.len() != 3 {
        return Err(Error::Unsupported(format!(
            "`{key}` has {} labels; expected Safe, Unsafe and Controversial",
            map.len()
        )));
    }
    Ok([
        row(Severity::Safe)?,
        row(Severity::Unsafe)?,
        row(Severity::Controversial)?,
    ])
}
