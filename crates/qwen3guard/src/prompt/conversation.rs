//! Conversations to moderate: roles, messages and the rules a moderation request obeys.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions ahead of the conversation; only allowed as the first message.
    System,
    /// The person talking to the assistant.
    User,
    /// The model being guarded.
    Assistant,
}

impl Role {
    /// The role's name as templates spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// What was written, verbatim. Text that looks like a control token stays text.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// What is being judged: the last message of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// The last message is the user's: is the request safe?
    Prompt,
    /// The last message is the assistant's: is the answer safe, and did it refuse?
    Response,
}

/// A validated conversation: non-empty, a system message only first, at least one user
/// message, and ending with a user or assistant message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    messages: Vec<Message>,
}

impl Conversation {
    /// Validates `messages`.
    pub fn new(messages: Vec<Message>) -> Result<Self> {
        let Some(last) = messages.last() else {
            return Err(Error::Conversation(
                "the conversation is empty; give at least one user message".into(),
            ));
        };
        if last.role == Role::System {
            return Err(Error::Conversation(
                "the last message must be from the user or the assistant, not the system".into(),
            ));
        }
        if let Some(i) = messages.iter().skip(1).position(|m| m.role == Role::System) {
            return Err(Error::Conversation(format!(
                "message {} has role system; a system message is only allowed first",
                i + 1
            )));
        }
        // The Gen template renders the last user turn and what answers it; without a user
        // message it renders an empty conversation, and an assistant message alone would
        // be judged unseen (found by the `render` fuzz target).
        if !messages.iter().any(|m| m.role == Role::User) {
            return Err(Error::Conversation(
                "the conversation has no user message; Qwen3Guard judges a user prompt, or an \
                 assistant's response together with the prompt it answers"
                    .into(),
            ));
        }
        Ok(Conversation { messages })
    }

    /// A single user prompt, optionally followed by the assistant's response.
    pub fn from_prompt(prompt: &str, response: Option<&str>) -> Self {
        let mut messages = vec![Message::new(Role::User, prompt)];
        if let Some(response) = response {
            messages.push(Message::new(Role::Assistant, response));
        }
        Conversation { messages }
    }

    /// Reads a JSON file holding `[{"role": ..., "content": ...}, ...]`.
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let messages: Vec<Message> = serde_json::from_str(&text).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(messages)
    }

    /// The messages in order.
    pub fn messages(&self) -> &[Message] {
        &self.messages
    }

    /// Prompt moderation if the user spoke last, response moderation if the assistant did.
    pub fn task(&self) -> Task {
        match self.messages.last().map(|m| m.role) {
            Some(Role::Assistant) => Task::Response,
            _ => Task::Prompt,
        }
    }

    /// The conversation up to and including the last user message (the prompt part).
    pub fn up_to_last_user(&self) -> Option<Conversation> {
        let last_user = self.messages.iter().rposition(|m| m.role == Role::User)?;
        Some(Conversation {
            messages: self.messages[..=last_user].to_vec(),
        })
    }
}
