//! The chat cycle: load the session, prompt the model with it, append the run, save, reply.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::input::{IdempotencyKey, Message, SessionId};
use crate::memory::{Memory, Run};
use crate::model::{ChatMessage, ChatModel, ModelError, Role, Usage};
use crate::store::{Receipt, SessionStore, StoreError};

/// Tunables of the cycle.
#[derive(Debug, Clone)]
pub struct ChatSettings {
    pub system_prompt: Option<String>,
    pub max_runs: Option<u64>,
    /// The longest one model call may take, whatever the deadline.
    pub model_timeout: Duration,
    /// Time kept back from the model for saving and answering before the invocation's deadline.
    pub save_reserve: Duration,
    /// Save attempts when other writers keep saving the same session in between.
    pub max_save_attempts: u32,
    /// The most history, in estimated tokens, sent with a prompt: the newest runs that fit.
    pub history_token_budget: u64,
}

impl Default for ChatSettings {
    fn default() -> Self {
        ChatSettings {
            system_prompt: None,
            max_runs: None,
            model_timeout: crate::config::DEFAULT_MODEL_TIMEOUT,
            save_reserve: Duration::from_millis(1500),
            max_save_attempts: 16,
            history_token_budget: crate::config::DEFAULT_HISTORY_TOKEN_BUDGET,
        }
    }
}

/// The answer to one message, after it is saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub run_id: String,
    pub text: String,
    pub usage: Option<Usage>,
    /// The answer was saved by an earlier request with the same idempotency key.
    pub replayed: bool,
    /// Wall time of each phase, for the request's log line.
    pub timings: Timings,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub load_ms: u64,
    pub model_ms: u64,
    pub save_ms: u64,
    pub save_attempts: u32,
}

/// Why a message got no reply. In every case the session is as it was before the message.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other writers kept saving the session; every attempt met a newer version.
    #[error("the session was too busy to save after {0} attempts")]
    Contention(u32),
    /// The idempotency key was used before with another message.
    #[error("this Idempotency-Key was already used with a different message")]
    KeyReused,
}

pub struct ChatService {
    store: Arc<dyn SessionStore>,
    model: Arc<dyn ChatModel>,
    settings: ChatSettings,
}

impl ChatService {
    pub fn new(
        store: Arc<dyn SessionStore>,
        model: Arc<dyn ChatModel>,
        settings: ChatSettings,
    ) -> Self {
        ChatService {
            store,
            model,
            settings,
        }
    }

    /// Every run of a session, oldest first; `None` if the session is unknown.
    pub async fn history(&self, session: &SessionId) -> Result<Option<Vec<Run>>, StoreError> {
        self.store.history(session).await
    }

    /// Forgets a session; `false` if it did not exist.
    pub async fn forget(&self, session: &SessionId) -> Result<bool, StoreError> {
        self.store.delete(session).await
    }

    /// Runs one turn. `deadline` is when the caller stops waiting (the Lambda invocation's end).
    /// With an idempotency key, a retry of a saved turn gets the saved reply, and the model is
    /// not asked again.
    pub async fn send(
        &self,
        session: &SessionId,
        message: &Message,
        deadline: Option<Instant>,
        key: Option<&IdempotencyKey>,
    ) -> Result<Reply, ChatError> {
        let mut timings = Timings::default();
        let started = Instant::now();
        if let Some(key) = key {
            if let Some(receipt) = self.store.receipt(session, key).await? {
                return replay(receipt, message, timings);
            }
        }
        let mut snapshot = self.store.load(session).await?;
        timings.load_ms = ms_since(started);

        let prompt = build_prompt(
            self.settings.system_prompt.as_deref(),
            &snapshot.memory,
            message,
            self.settings.history_token_budget,
        );
        let model_started = Instant::now();
        let mut model_deadline = model_started + self.settings.model_timeout;
        if let Some(deadline) = deadline {
            model_deadline = model_deadline.min(
                deadline
                    .checked_sub(self.settings.save_reserve)
                    .unwrap_or(model_started),
            );
        }
        let completion = self.model.complete(&prompt, model_deadline).await?;
        timings.model_ms = ms_since(model_started);
        if completion.truncated {
            tracing::warn!(session_id = %session, "the model's answer was cut off at its length limit");
        }

        let run = Run::new(message.as_str(), completion.text);
        let receipt = key.map(|key| Receipt {
            key: key.clone(),
            message: message.as_str().to_owned(),
            run_id: run.id.clone(),
            reply: run.output.clone(),
        });
        let save_started = Instant::now();
        let mut backoff = Duration::from_millis(10);
        for attempt in 1..=self.settings.max_save_attempts {
            timings.save_attempts = attempt;
            let mut memory = snapshot.memory.clone();
            if self.settings.max_runs.is_some() {
                memory.max_runs = self.settings.max_runs;
            }
            memory.push(run.clone());
            match self
                .store
                .save(session, &memory, &snapshot, receipt.as_ref())
                .await
            {
                Ok(()) => {
                    timings.save_ms = ms_since(save_started);
                    return Ok(Reply {
                        run_id: run.id,
                        text: run.output,
                        usage: completion.usage,
                        replayed: false,
                        timings,
                    });
                }
                Err(StoreError::Conflict) => {
                    // Someone saved in between: take their runs and add ours after them. The
                    // model is not asked again; its answer stands.
                    let jitter = rand::random_range(0..=backoff.as_millis() as u64);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                    snapshot = self.store.load(session).await?;
                }
                Err(StoreError::ReceiptExists) => {
                    // A retry of this request saved first: its run stands, ours is dropped.
                    let key = key.ok_or(StoreError::ReceiptExists)?;
                    let receipt = self
                        .store
                        .receipt(session, key)
                        .await?
                        .ok_or(StoreError::ReceiptExists)?;
                    return replay(receipt, message, timings);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ChatError::Contention(self.settings.max_save_attempts))
    }
}

fn replay(receipt: Receipt, message: &Message, timings: Timings) -> Result<Reply, ChatError> {
    if receipt.message != message.as_str() {
        return Err(ChatError::KeyReused);
    }
    Ok(Reply {
        run_id: receipt.run_id,
        text: receipt.reply,
        usage: None,
        replayed: true,
        timings,
    })
}

fn ms_since(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

/// Estimated tokens of a text, offline: about four characters a token (OpenAI's rule of thumb
/// for English), plus a few for the message's framing. Errs high for short words, which keeps
/// the prompt under budget.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4) + 4
}

/// The system prompt, then the newest stored runs whose estimated tokens fit `budget`, as
/// user/assistant pairs, oldest first, then the new message (always sent).
pub fn build_prompt(
    system: Option<&str>,
    memory: &Memory,
    message: &Message,
    budget: u64,
) -> Vec<ChatMessage> {
    let mut spent = 0;
    let fitting = memory
        .runs
        .iter()
        .rev()
        .take_while(|run| {
            spent += estimate_tokens(&run.input) + estimate_tokens(&run.output);
            spent <= budget
        })
        .count();
    let history = &memory.runs[memory.runs.len() - fitting..];
    let mut prompt = Vec::with_capacity(2 + history.len() * 2);
    if let Some(system) = system {
        prompt.push(ChatMessage::new(Role::System, system));
    }
    for run in history {
        prompt.push(ChatMessage::new(Role::User, run.input.as_str()));
        prompt.push(ChatMessage::new(Role::Assistant, run.output.as_str()));
    }
    prompt.push(ChatMessage::new(Role::User, message.as_str()));
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_carries_history_in_order() {
        let mut memory = Memory::default();
        memory.push(Run::new("Hello my name is Collin.", "Hello Collin!"));
        let message = Message::parse("What is my name?", 100).unwrap();
        let prompt = build_prompt(Some("Be brief."), &memory, &message, 1000);
        let roles: Vec<_> = prompt.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(prompt[1].content, "Hello my name is Collin.");
        assert_eq!(prompt[3].content, "What is my name?");
        assert_eq!(
            build_prompt(None, &Memory::default(), &message, 1000).len(),
            1
        );
    }

    #[test]
    fn prompt_keeps_the_newest_runs_within_budget() {
        let mut memory = Memory::default();
        for i in 0..10 {
            // 40 characters each way: 14 estimated tokens each, 28 a run.
            memory.push(Run::new(format!("{i:0>40}"), "a".repeat(40)));
        }
        let message = Message::parse("next", 100).unwrap();
        let prompt = build_prompt(None, &memory, &message, 100);
        // 3 runs fit in 100 (84), a 4th would not (112).
        assert_eq!(prompt.len(), 3 * 2 + 1);
        assert_eq!(prompt[0].content, format!("{:0>40}", 7));
        assert_eq!(prompt.last().unwrap().content, "next");
        // A budget smaller than one run still sends the message.
        assert_eq!(build_prompt(None, &memory, &message, 1).len(), 1);
    }
}
