//! The chat cycle: load the session, prompt the model with it, append the run, save, reply.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::input::{IdempotencyKey, Message, SessionKey};
use crate::memory::{Format, Memory, Run};
use crate::model::{ChatMessage, ChatModel, ModelError, Role, Usage};
use crate::store::{Changes, Receipt, SessionStore, StoreError, Summary, Version};

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
    /// Fold runs that fall out of the prompt window into a running summary sent as context.
    pub summarize: bool,
    /// The shape new sessions are stored in; existing sessions keep theirs.
    pub new_session_format: Format,
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
            summarize: false,
            new_session_format: Format::Seed,
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
    pub async fn history(&self, session: &SessionKey) -> Result<Option<Vec<Run>>, StoreError> {
        self.store.history(session).await
    }

    /// Forgets a session; `false` if it did not exist.
    pub async fn forget(&self, session: &SessionKey) -> Result<bool, StoreError> {
        self.store.delete(session).await
    }

    /// Runs one turn. `deadline` is when the caller stops waiting (the Lambda invocation's end).
    /// With an idempotency key, a retry of a saved turn gets the saved reply, and the model is
    /// not asked again.
    pub async fn send(
        &self,
        session: &SessionKey,
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

        let model_started = Instant::now();
        let mut model_deadline = model_started + self.settings.model_timeout;
        if let Some(deadline) = deadline {
            model_deadline = model_deadline.min(
                deadline
                    .checked_sub(self.settings.save_reserve)
                    .unwrap_or(model_started),
            );
        }
        let budget = self.settings.history_token_budget;
        let window = window_start(&snapshot.memory, budget);
        let new_summary = if self.settings.summarize {
            self.fold(session, &snapshot, window, model_deadline).await
        } else {
            None
        };
        let summary = new_summary.as_ref().or(snapshot.summary.as_ref());
        let prompt = build_prompt(
            self.settings.system_prompt.as_deref(),
            summary
                .filter(|_| self.settings.summarize)
                .map(|s| s.text.as_str()),
            &snapshot.memory.runs[window..],
            message,
        );
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
            if snapshot.version == Version::New {
                memory.format = self.settings.new_session_format;
            }
            if self.settings.max_runs.is_some() {
                memory.max_runs = self.settings.max_runs;
            }
            memory.push(run.clone());
            let changes = Changes {
                memory: &memory,
                receipt: receipt.as_ref(),
                summary: new_summary.as_ref(),
            };
            match self.store.save(session, changes, &snapshot).await {
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

impl ChatService {
    /// Folds the runs between the stored summary and the prompt window into a new summary.
    /// A failed fold is logged and skipped: the turn goes on with the old summary.
    async fn fold(
        &self,
        session: &SessionKey,
        snapshot: &crate::store::Snapshot,
        window: usize,
        deadline: Instant,
    ) -> Option<Summary> {
        let runs = &snapshot.memory.runs;
        // Runs up to the stored summary's newest are in it already. If that run is gone from
        // the item (archived or dropped), every run left is newer.
        let start = snapshot
            .summary
            .as_ref()
            .and_then(|s| runs.iter().position(|r| r.id == s.through))
            .map_or(0, |i| i + 1);
        if start >= window {
            return None;
        }
        // A first fold of a long session takes its newest runs only, so the request stays small.
        let start = start.max(window_start(
            &snapshot.memory.with_prefix(window),
            4 * self.settings.history_token_budget,
        ));
        let previous = snapshot.summary.as_ref().map(|s| s.text.as_str());
        let request = summary_prompt(previous, &runs[start..window]);
        match self.model.complete(&request, deadline).await {
            Ok(completion) => Some(Summary {
                text: completion.text,
                through: runs[window - 1].id.clone(),
            }),
            Err(e) => {
                tracing::warn!(session_id = %session, error = %e, "could not update the summary; keeping the old one");
                None
            }
        }
    }
}

/// Instruction for folding runs into the running summary.
pub const SUMMARY_INSTRUCTION: &str = "You keep a running summary of a conversation. Fold the new \
exchanges into the summary so far. Keep who took part, names, facts, decisions and open \
questions. Answer with the updated summary only, in under 200 words.";

/// Introduces the running summary in a chat prompt.
pub const SUMMARY_PREFIX: &str = "Summary of the earlier conversation: ";

fn summary_prompt(previous: Option<&str>, runs: &[Run]) -> Vec<ChatMessage> {
    let mut text = format!(
        "Summary so far:\n{}\n\nNew exchanges:\n",
        previous.unwrap_or("(none)")
    );
    for run in runs {
        text.push_str("User: ");
        text.push_str(&run.input);
        text.push_str("\nAssistant: ");
        text.push_str(&run.output);
        text.push('\n');
    }
    vec![
        ChatMessage::new(Role::System, SUMMARY_INSTRUCTION),
        ChatMessage::new(Role::User, text),
    ]
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

/// Where the prompt window starts: the newest runs whose estimated tokens fit `budget`.
pub fn window_start(memory: &Memory, budget: u64) -> usize {
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
    memory.runs.len() - fitting
}

/// The system prompt, the running summary, then `history` as user/assistant pairs, oldest
/// first, then the new message.
pub fn build_prompt(
    system: Option<&str>,
    summary: Option<&str>,
    history: &[Run],
    message: &Message,
) -> Vec<ChatMessage> {
    let mut prompt = Vec::with_capacity(3 + history.len() * 2);
    if let Some(system) = system {
        prompt.push(ChatMessage::new(Role::System, system));
    }
    if let Some(summary) = summary {
        prompt.push(ChatMessage::new(
            Role::System,
            format!("{SUMMARY_PREFIX}{summary}"),
        ));
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
        let prompt = build_prompt(Some("Be brief."), None, &memory.runs, &message);
        let roles: Vec<_> = prompt.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(prompt[1].content, "Hello my name is Collin.");
        assert_eq!(prompt[3].content, "What is my name?");
        assert_eq!(build_prompt(None, None, &[], &message).len(), 1);
        let with_summary = build_prompt(None, Some("Ada was here."), &[], &message);
        assert_eq!(
            with_summary[0].content,
            "Summary of the earlier conversation: Ada was here."
        );
    }

    #[test]
    fn the_window_keeps_the_newest_runs_within_budget() {
        let mut memory = Memory::default();
        for i in 0..10 {
            // 40 characters each way: 14 estimated tokens each, 28 a run.
            memory.push(Run::new(format!("{i:0>40}"), "a".repeat(40)));
        }
        // 3 runs fit in 100 (84), a 4th would not (112).
        assert_eq!(window_start(&memory, 100), 7);
        assert_eq!(window_start(&memory, 1), 10, "nothing fits");
        assert_eq!(window_start(&memory, 10_000), 0, "everything fits");
    }
}
