//! OpenRLHF's rendered texts back into what the guard judges, and the rendering the other
//! way for an external helpfulness server.
//!
//! OpenRLHF's remote reward protocol sends, per rollout, the prompt as the policy saw it
//! (`prompts[i]`, rendered with the policy's chat template) and the whole sequence
//! (`query[i]`: that prompt, then the generated text, decoded with its special tokens).
//! For a Qwen3-family policy that is ChatML:
//!
//! ```text
//! <|im_start|>system\n{system}<|im_end|>\n          (optional)
//! <|im_start|>user\n{user}<|im_end|>\n
//! <|im_start|>assistant\n{earlier answer}<|im_end|>\n (earlier turns, if any)
//! <|im_start|>user\n{last user}<|im_end|>\n
//! <|im_start|>assistant\n                            (the generation prompt)
//! <think>\n\n</think>\n\n                            (only with thinking switched off)
//! ```
//!
//! [`split`] takes the prompt off the front of the query (leading `<|endoftext|>` padding
//! is ignored on both; a query that does not start with its prompt is refused), reads the
//! prompt's turns back into messages (a prompt without any `<|im_start|>` is one user
//! message: a policy trained on raw text), and cuts the response into thinking (a
//! `<think>...</think>` block at its start, or everything before `</think>` when the prompt
//! itself opened `<think>`) and answer, with the end-of-turn and padding tokens after it
//! removed. An unclosed `<think>` (a rollout cut at its length limit) is all thinking and
//! an empty answer.
//!
//! The texts arrive decoded, so a `<|im_end|>` written inside a message cannot be told
//! from the real one here; what matters for safety still holds, because the guard
//! tokenizes every message's content as plain text and the turns found here can never
//! forge the guard's own template.

use qwen3guard::{Conversation, Message, Role};

const START: &str = "<|im_start|>";
const END: &str = "<|im_end|>";
const PAD: &str = "<|endoftext|>";
const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";
const GENERATION_PROMPT: &str = "<|im_start|>assistant\n";
/// The generation prompt's tail when thinking is switched off (an empty think block).
const NO_THINKING: &str = "<think>\n\n</think>\n\n";

/// A rollout read back from its texts.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// The prompt's turns, ending with the user's.
    pub prompt: Conversation,
    /// The reasoning, when the response has any.
    pub thinking: Option<String>,
    /// The final answer.
    pub answer: String,
}

/// Why a query and its prompt cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The query is not its prompt followed by a response.
    #[error("the query does not start with its prompt")]
    NotPrefixed,
    /// The prompt has text outside a `<|im_start|>role\n...<|im_end|>` turn.
    #[error("the prompt is not ChatML: {0}")]
    Malformed(String),
    /// A turn's role is not system, user or assistant.
    #[error("the prompt has a turn with role {0:?}; expected system, user or assistant")]
    Role(String),
    /// The turns are not a conversation the guard can judge.
    #[error("the prompt's turns: {0}")]
    Conversation(String),
}

fn without_padding(text: &str) -> &str {
    let mut text = text;
    while let Some(rest) = text.strip_prefix(PAD) {
        text = rest;
    }
    text
}

/// Splits `query` into `prompt`'s turns, the thinking and the answer.
pub fn split(query: &str, prompt: &str) -> Result<Rollout, SplitError> {
    let (query, prompt) = (without_padding(query), without_padding(prompt));
    let response = query.strip_prefix(prompt).ok_or(SplitError::NotPrefixed)?;
    let (turns, thinking_open) = prompt_turns(prompt)?;
    let (thinking, answer) = cut_response(response, thinking_open);
    Ok(Rollout {
        prompt: turns,
        thinking,
        answer,
    })
}

/// The prompt's turns, and whether it ends inside an open `<think>`.
fn prompt_turns(prompt: &str) -> Result<(Conversation, bool), SplitError> {
    let mut body = prompt;
    let mut thinking_open = false;
    if let Some(rest) = body.strip_suffix(NO_THINKING) {
        body = rest;
    } else if let Some(rest) = body
        .strip_suffix("<think>\n")
        .or_else(|| body.strip_suffix(THINK_OPEN))
    {
        body = rest;
        thinking_open = true;
    }
    let body = body.strip_suffix(GENERATION_PROMPT).unwrap_or(body);
    let messages = if body.contains(START) {
        chatml_turns(body)?
    } else {
        vec![Message::new(Role::User, body.trim())]
    };
    if messages.last().map(|m| m.role) != Some(Role::User) {
        return Err(SplitError::Conversation(
            "the last turn before the response must be the user's".into(),
        ));
    }
    let conversation =
        Conversation::new(messages).map_err(|e| SplitError::Conversation(e.to_string()))?;
    Ok((conversation, thinking_open))
}

fn chatml_turns(body: &str) -> Result<Vec<Message>, SplitError> {
    let mut messages = Vec::new();
    let mut rest = body.trim_start();
    while !rest.is_empty() {
        let Some(turn) = rest.strip_prefix(START) else {
            return Err(SplitError::Malformed(format!(
                "text outside a turn at {:?}",
                rest.chars().take(40).collect::<String>()
            )));
        };
        let Some((role, after)) = turn.split_once('\n') else {
            return Err(SplitError::Malformed("a turn has no role line".into()));
        };
        let Some((content, after)) = after.split_once(END) else {
            return Err(SplitError::Malformed(format!(
                "the {role} turn is not closed by {END}"
            )));
        };
        let role = match role.trim() {
            "system" => Role::System,
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => return Err(SplitError::Role(other.to_string())),
        };
        messages.push(Message::new(role, content));
        rest = after.trim_start();
    }
    Ok(messages)
}

/// The thinking and the answer of a generated `response`.
fn cut_response(response: &str, thinking_open: bool) -> (Option<String>, String) {
    let mut text = response;
    // What follows the answer: the end of the turn, then padding up to the batch's length.
    loop {
        let trimmed = text.trim_end();
        let stripped = trimmed
            .strip_suffix(PAD)
            .or_else(|| trimmed.strip_suffix(END));
        match stripped {
            Some(rest) => text = rest,
            None => break,
        }
    }
    let (thinking, answer) = if thinking_open {
        match text.split_once(THINK_CLOSE) {
            Some((thinking, answer)) => (thinking, answer),
            None => (text, ""),
        }
    } else if let Some(after) = text.trim_start().strip_prefix(THINK_OPEN) {
        match after.split_once(THINK_CLOSE) {
            Some((thinking, answer)) => (thinking, answer),
            None => (after, ""),
        }
    } else {
        ("", text)
    };
    let thinking = thinking.trim();
    (
        (!thinking.is_empty()).then(|| thinking.to_string()),
        answer.trim().to_string(),
    )
}

/// `messages` rendered as a Qwen3 prompt, generation prompt included (what `prompts[i]`
/// holds).
pub fn render_prompt(messages: &[Message]) -> String {
    let mut text = String::new();
    for m in messages {
        text.push_str(&format!("{START}{}\n{}{END}\n", m.role.as_str(), m.content));
    }
    text.push_str(GENERATION_PROMPT);
    text
}

/// The whole rollout as `query[i]` holds it: the prompt, the thinking block when there is
/// one, the answer and the end of the turn.
pub fn render_query(messages: &[Message], thinking: Option<&str>, answer: &str) -> String {
    let mut text = render_prompt(messages);
    if let Some(thinking) = thinking {
        text.push_str(&format!("{THINK_OPEN}\n{thinking}\n{THINK_CLOSE}\n\n"));
    }
    text.push_str(answer);
    text.push_str(END);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> Message {
        Message::new(Role::User, text)
    }

    #[test]
    fn a_rendered_rollout_splits_back_into_its_parts() {
        let turns = vec![
            Message::new(Role::System, "Be brief."),
            user("Hi"),
            Message::new(Role::Assistant, "Hello!"),
            user("How do I pick a lock?\nI lost my key."),
        ];
        for thinking in [None, Some("The user locked themselves out.")] {
            let query = render_query(&turns, thinking, "Call a locksmith.");
            let rollout = split(&query, &render_prompt(&turns)).unwrap();
            assert_eq!(rollout.prompt.messages(), &turns[..]);
            assert_eq!(rollout.thinking.as_deref(), thinking);
            assert_eq!(rollout.answer, "Call a locksmith.");
        }
    }

    #[test]
    fn padding_end_tokens_and_switched_off_thinking_are_removed() {
        let prompt = format!("{PAD}{PAD}{}{NO_THINKING}", render_prompt(&[user("Hi")]));
        let query = format!("{prompt}Hello there.{END}\n{PAD}{PAD}");
        let rollout = split(&query, &prompt).unwrap();
        assert_eq!(rollout.thinking, None);
        assert_eq!(rollout.answer, "Hello there.");
        assert_eq!(rollout.prompt.messages(), &[user("Hi")]);
    }

    #[test]
    fn a_prompt_that_opens_think_gives_the_text_before_the_close_as_thinking() {
        let prompt = format!("{}<think>\n", render_prompt(&[user("Hi")]));
        let query = format!("{prompt}Plan a greeting.\n</think>\n\nHello.{END}");
        let rollout = split(&query, &prompt).unwrap();
        assert_eq!(rollout.thinking.as_deref(), Some("Plan a greeting."));
        assert_eq!(rollout.answer, "Hello.");
        // Cut off while thinking: all of it is thinking.
        let cut = split(&format!("{prompt}Plan a gree"), &prompt).unwrap();
        assert_eq!(cut.thinking.as_deref(), Some("Plan a gree"));
        assert_eq!(cut.answer, "");
    }

    #[test]
    fn plain_text_prompts_are_one_user_message() {
        let rollout = split("Question: 2+2?\nAnswer: 4", "Question: 2+2?\n").unwrap();
        assert_eq!(rollout.prompt.messages(), &[user("Question: 2+2?")]);
        assert_eq!(rollout.answer, "Answer: 4");
    }

    #[test]
    fn mismatched_and_malformed_texts_are_refused() {
        let prompt = render_prompt(&[user("Hi")]);
        assert_eq!(
            split("something else", &prompt),
            Err(SplitError::NotPrefixed)
        );
        let stray = format!("junk{prompt}");
        assert!(matches!(
            split(&format!("{stray}ok"), &stray),
            Err(SplitError::Malformed(_))
        ));
        let tool = format!("{START}tool\nx{END}\n{prompt}");
        assert_eq!(
            split(&format!("{tool}ok"), &tool),
            Err(SplitError::Role("tool".into()))
        );
        let unclosed = format!("{START}user\nHi\n{GENERATION_PROMPT}");
        assert!(matches!(
            split(&format!("{unclosed}ok"), &unclosed),
            Err(SplitError::Malformed(_))
        ));
        let answered = format!("{START}user\nHi{END}\n{START}assistant\nHello{END}\n");
        assert!(matches!(
            split(&format!("{answered}ok"), &answered),
            Err(SplitError::Conversation(_))
        ));
    }
}
