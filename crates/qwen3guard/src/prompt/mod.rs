//! From a conversation to the token ids the model reads.
//!
//! [`Prompter`] pairs the checkpoint's chat template with its tokenizer. Content is escaped
//! before rendering and the rendered text is tokenized with [`PromptTokenizer`], so control
//! tokens come from the template alone.

mod conversation;
mod template;
mod tokenize;

use std::path::Path;

pub use conversation::{Conversation, Message, Role, Task};
pub use template::{ChatTemplate, RenderOptions, TemplateMessage};
pub use tokenize::{PromptTokenizer, TextPiece};

use crate::error::{Error, Result};

/// A rendered prompt: the text as the reference would render it, and its token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedPrompt {
    /// The rendered text, message contents verbatim.
    pub text: String,
    /// The token ids; control tokens only where the template put them.
    pub token_ids: Vec<u32>,
}

/// A chat template and tokenizer, ready to turn conversations into ids.
pub struct Prompter {
    template: ChatTemplate,
    tokenizer: PromptTokenizer,
    /// Whether the template reads `reasoning_content` (the stock Qwen3 template does); then
    /// a `<think>` block in a response is handed to the template as reasoning instead of
    /// staying escaped text.
    splits_reasoning: bool,
}

impl Prompter {
    /// Builds from a template source and a tokenizer.
    pub fn new(template_source: &str, tokenizer: PromptTokenizer) -> Result<Self> {
        Ok(Prompter {
            template: ChatTemplate::new(template_source)?,
            tokenizer,
            splits_reasoning: template_source.contains("reasoning_content"),
        })
    }

    /// Loads `tokenizer.json` and the `chat_template` of `tokenizer_config.json` from `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tokenizer = PromptTokenizer::from_file(&dir.join("tokenizer.json"))?;
        let source = read_chat_template(dir)?;
        Self::new(&source, tokenizer)
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &PromptTokenizer {
        &self.tokenizer
    }

    /// Renders and tokenizes `conversation`.
    pub fn render(
        &self,
        conversation: &Conversation,
        options: RenderOptions,
    ) -> Result<RenderedPrompt> {
        let messages: Vec<TemplateMessage> = conversation
            .messages()
            .iter()
            .map(|m| self.template_message(m))
            .collect();
        let escaped = self.template.render(&messages, options)?;
        Ok(RenderedPrompt {
            text: self.tokenizer.unescape(&escaped),
            token_ids: self.tokenizer.encode_rendered(&escaped)?,
        })
    }

    fn template_message(&self, message: &Message) -> TemplateMessage {
        let (content, reasoning) = match message.role {
            Role::Assistant if self.splits_reasoning => split_reasoning(&message.content),
            _ => (message.content.as_str(), None),
        };
        TemplateMessage {
            role: message.role.as_str(),
            content: self.tokenizer.escape(content),
            reasoning_content: reasoning.map(|r| self.tokenizer.escape(r)),
        }
    }
}

/// Splits `<think>reasoning</think>answer` the way the stock Qwen3 template does:
/// the answer is what follows the last `</think>`, the reasoning what precedes the first
/// `</think>` after its last `<think>`, newlines trimmed at the joins.
fn split_reasoning(content: &str) -> (&str, Option<&str>) {
    let Some(first_close) = content.find("</think>") else {
        return (content, None);
    };
    let last_close = content.rfind("</think>").unwrap_or(first_close);
    let answer = content[last_close + "</think>".len()..].trim_start_matches('\n');
    let before = content[..first_close].trim_end_matches('\n');
    let reasoning = match before.rfind("<think>") {
        Some(open) => &before[open + "<think>".len()..],
        None => before,
    };
    (answer, Some(reasoning.trim_start_matches('\n')))
}

/// Reads `chat_template` from `tokenizer_config.json`, or `chat_template.jinja` beside it
/// (newer checkpoints store it in its own file).
pub fn read_chat_template(dir: &Path) -> Result<String> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.is_file() {
        return std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e));
    }
    let path = dir.join("tokenizer_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    match config.get("chat_template") {
        Some(serde_json::Value::String(source)) => Ok(source.clone()),
        Some(_) => Err(Error::config(
            &path,
            "`chat_template` is not a single string (named templates are not supported)",
        )),
        None => Err(Error::config(
            &path,
            "no `chat_template` (and no chat_template.jinja beside it)",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::split_reasoning;

    #[test]
    fn reasoning_split_follows_the_template() {
        assert_eq!(
            split_reasoning("<think>\nplan\n</think>\n\nanswer"),
            ("answer", Some("plan"))
        );
        assert_eq!(split_reasoning("no think"), ("no think", None));
        assert_eq!(split_reasoning("a</think>b</think>c"), ("c", Some("a")));
    }
}
