//! The engine's error type.
//!
//! Every variant names what is wrong (a path, a tensor, a field) so that the command-line
//! tool can print it as one line and a server can map it to a status code without parsing
//! strings: [`Error::kind`] sorts every variant into an [`ErrorKind`] (the caller's
//! mistake, input too long, a checkpoint problem, an internal fault).

use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of failure an [`Error`] is, for callers that react by kind (a server maps
/// these to status codes) rather than by variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller's input is wrong (a malformed conversation, a token id outside the
    /// vocabulary, no tokens, sessions mixed from two models): fix the request.
    InvalidInput,
    /// The input is well formed but longer than the model's context.
    TooLong,
    /// The checkpoint or the operation asks for something this engine does not implement,
    /// or needs the other model variant.
    Unsupported,
    /// A file, download, tokenizer or template the engine needs is missing or malformed.
    Resource,
    /// A fault inside the engine (a failed computation, broken bookkeeping): not the
    /// caller's doing.
    Internal,
}

/// Everything that can go wrong while loading a checkpoint or moderating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// A JSON file (config, index, messages) is malformed.
    #[error("{path}: invalid JSON: {source}{}", json_hint(.source))]
    Json {
        /// The file at fault.
        path: PathBuf,
        /// The parser's reason, with line and column.
        source: serde_json::Error,
    },
    /// A configuration value is missing, out of range or inconsistent.
    #[error("{path}: {message}")]
    Config {
        /// The config file at fault.
        path: PathBuf,
        /// What is wrong, naming the key.
        message: String,
    },
    /// The checkpoint asks for something this engine does not implement.
    #[error("unsupported checkpoint: {0}")]
    Unsupported(String),
    /// `architectures` names neither Qwen3Guard variant.
    #[error(
        "unknown architecture {0:?} in config.json: expected Qwen3ForCausalLM (Gen) or Qwen3ForGuardModel (Stream)"
    )]
    UnknownArchitecture(String),
    /// The operation needs the other variant (e.g. streaming with a Gen checkpoint).
    #[error("this is a {found} checkpoint, but {needed} needs a {expected} checkpoint")]
    WrongVariant {
        /// The variant the operation needs.
        expected: &'static str,
        /// The variant that was loaded.
        found: &'static str,
        /// The operation.
        needed: &'static str,
    },
    /// A safetensors file is truncated or corrupt.
    #[error("{path}: not a valid safetensors file: {reason}")]
    Safetensors {
        /// The file at fault.
        path: PathBuf,
        /// What the parser found.
        reason: String,
    },
    /// A tensor the model needs is absent from every weight file.
    #[error("checkpoint has no tensor `{name}` (looked in {files})")]
    MissingTensor {
        /// The checkpoint key.
        name: String,
        /// The weight files searched.
        files: String,
    },
    /// A tensor exists but with the wrong shape for this config.
    #[error("tensor `{name}` has shape {found:?}, but config.json implies {expected:?}")]
    TensorShape {
        /// The checkpoint key.
        name: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a dtype the engine does not load.
    #[error("tensor `{name}` is stored as {dtype}; only BF16, F16 and F32 weights are supported")]
    TensorDtype {
        /// The checkpoint key.
        name: String,
        /// The stored dtype.
        dtype: String,
    },
    /// The tokenizer files could not be loaded or used.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The conversation cannot be moderated as given.
    #[error("invalid conversation: {0}")]
    Conversation(String),
    /// The input does not fit in the model's context window.
    #[error(
        "input is {tokens} tokens, longer than the model's context of {max} tokens (max_position_embeddings)"
    )]
    ContextTooLong {
        /// Tokens the request needs.
        tokens: usize,
        /// The model's context length.
        max: usize,
    },
    /// A model could not be fetched from the Hugging Face Hub.
    #[error("cannot fetch {repo} from the Hugging Face Hub: {reason}")]
    Download {
        /// The repo id.
        repo: String,
        /// What failed, with a hint.
        reason: String,
    },
    /// A token id that the model's embedding table has no row for.
    #[error("token id {id} is outside the model's vocabulary of {vocab_size}")]
    TokenOutOfVocabulary {
        /// The offending id.
        id: u32,
        /// The vocabulary size (`vocab_size` in config.json).
        vocab_size: usize,
    },
    /// An operation that needs at least one token was given none.
    #[error("{0} needs at least one token")]
    NoTokens(&'static str),
    /// A batch call got lists of different lengths.
    #[error("a batch of {sessions} sessions was given {lists} lists of token ids")]
    BatchShape {
        /// Sessions in the batch.
        sessions: usize,
        /// Lists of ids given.
        lists: usize,
    },
    /// A session opened by one loaded model was passed to another.
    #[error("a session opened by another StreamGuard cannot join this batch")]
    ForeignSession,
    /// The cache or batch bookkeeping is inconsistent (raised by the model code); a bug,
    /// never the caller's input.
    #[error("stream session: {0}")]
    Session(String),
    /// An internal fault that is not a failed tensor computation (a batch that lost a
    /// result, a value that failed to serialize); a bug.
    #[error("internal error: {0}")]
    Internal(String),
    /// The tensor library failed; this indicates a bug or an out-of-memory condition.
    #[error("model computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

impl Error {
    /// The kind of failure, for mapping to statuses or exit codes.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Conversation(_)
            | Error::TokenOutOfVocabulary { .. }
            | Error::NoTokens(_)
            | Error::BatchShape { .. }
            | Error::ForeignSession => ErrorKind::InvalidInput,
            Error::ContextTooLong { .. } => ErrorKind::TooLong,
            Error::Unsupported(_) | Error::UnknownArchitecture(_) | Error::WrongVariant { .. } => {
                ErrorKind::Unsupported
            }
            Error::Io { .. }
            | Error::Json { .. }
            | Error::Config { .. }
            | Error::Safetensors { .. }
            | Error::MissingTensor { .. }
            | Error::TensorShape { .. }
            | Error::TensorDtype { .. }
            | Error::Tokenizer(_)
            | Error::Template(_)
            | Error::Download { .. } => ErrorKind::Resource,
            Error::Session(_) | Error::Internal(_) | Error::Compute(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Config {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Words to add to a serde_json syntax error whose own do not say what is wrong: a
/// surrogate escape that is not half of a high-low pair reads "unexpected end of hex
/// escape" or "lone leading surrogate" (even for a lone trailing one), and bytes that
/// are not UTF-8 read "invalid unicode code point". Empty for every other error. The CLI
/// (through [`Error::Json`]) and the server give the same words.
pub fn json_hint(error: &serde_json::Error) -> &'static str {
    let message = error.to_string();
    if message.contains("surrogate") || message.contains("end of hex escape") {
        " (a \\uD800 to \\uDFFF escape is half of a surrogate pair: a high one, D800 to \
         DBFF, must be followed at once by a low one, DC00 to DFFF; a lone or reversed \
         half is not a character)"
    } else if message.contains("invalid unicode code point") {
        " (the bytes there are not UTF-8)"
    } else {
        ""
    }
}
