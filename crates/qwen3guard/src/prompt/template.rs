//! Chat templates: the checkpoint's own Jinja template, rendered the way transformers does.
//!
//! transformers renders with `trim_blocks` and `lstrip_blocks` on and Python string methods
//! available on values; minijinja with the `pycompat` callback reproduces that. Message
//! contents reach the template already escaped (see [`super::tokenize`]), so nothing a user
//! writes can become one of the template's control tokens.

use minijinja::{context, Environment, Value};
use serde::Serialize;

use crate::error::{Error, Result};

const TEMPLATE_NAME: &str = "chat";

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
}

/// One message as handed to the template, contents already escaped.
#[derive(Debug, Clone, Serialize)]
pub struct TemplateMessage {
    /// `system`, `user` or `assistant`.
    pub role: &'static str,
    /// The visible text.
    pub content: String,
    /// The assistant's reasoning, when the response carried a `<think>` block.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

/// Switches the templates understand.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// Append the assistant header for generation.
    pub add_generation_prompt: bool,
    /// `Some(false)` renders the empty think block of non-thinking mode.
    pub enable_thinking: Option<bool>,
}

impl ChatTemplate {
    /// Compiles `source`.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::Template(e.to_string()))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source.to_string())
            .map_err(|e| Error::Template(format!("cannot compile: {e}")))?;
        Ok(ChatTemplate { env })
    }

    /// Renders `messages` to the text the model reads.
    pub fn render(&self, messages: &[TemplateMessage], options: RenderOptions) -> Result<String> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Template(e.to_string()))?;
        let enable_thinking = match options.enable_thinking {
            Some(flag) => Value::from(flag),
            None => Value::UNDEFINED,
        };
        template
            .render(context! {
                messages => Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => options.add_generation_prompt,
                enable_thinking => enable_thinking,
            })
            .map_err(|e| Error::Template(format!("cannot render: {e}")))
    }
}
