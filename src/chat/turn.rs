//! One turn: read the session (or replay a receipt), ask the model, save the run.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::live::LiveWriter;
use super::prompt::{
    build_prompt, calibration, plan_window, prompt_tokens, session_scale, Calibration, FoldJob,
};
use super::{
    bounded, ms_since, ChatError, ChatService, ContextChange, Reply, Say, Timings, TurnEvent,
    TurnRequest,
};
use crate::deadline::Deadline;
use crate::input::{sha256_hex, Message, OwnerKey, SessionKey};
use crate::memory::{Memory, Run};
use crate::model::{ChatMessage, Completion, Prompt, Role, Usage};
use crate::store::quota::{self, Counter, QuotaKind};
use crate::store::{Branch, Changes, LiveWrite, Receipt, Snapshot, StoreError, Summary};

/// A turn after its read: replayed from a receipt, or ready for the model.
enum Prepared {
    Replayed(Reply),
    Ask(Box<Asking>),
}

/// What a turn carries from its read to its save.
struct Asking {
    snapshot: Snapshot,
    /// The message answered (a regeneration's is the replaced run's).
    message: Message,
    prompt: Prompt,
    /// The window steps: the runs before this one leave it, folded by `fold` beside the reply.
    step_to: Option<usize>,
    fold: Option<FoldJob>,
    model_deadline: Instant,
    timings: Timings,
    /// The token counter the answer's tokens go on (a quota of tokens is set).
    spend: Option<Counter>,
}

/// A turn's read: replayed or refused before it, or the session with the quota check's outcome.
enum Read {
    Done(Prepared),
    Session(Box<Snapshot>, Result<Admitted, ChatError>),
}

/// What a turn's quota check took.
#[derive(Default)]
struct Admitted {
    /// The turn counter it counted on (given back if the turn is a replay).
    counted: Option<Counter>,
    spend: Option<Counter>,
}

/// What the model calls of a turn gave: the reply, and the fold's outcome if one ran (a new
/// summary, or `None` when it failed).
struct Answered {
    completion: Completion,
    fold: Option<Option<Summary>>,
    /// The reply's own call (a fold beside it may take longer).
    model_ms: u64,
    /// A streamed reply's pieces, their lengths in bytes (a follower is sent the same pieces).
    pieces: Option<Vec<usize>>,
}

/// A future's output and the milliseconds it took.
async fn timed<T>(call: impl std::future::Future<Output = T>) -> (T, u64) {
    let started = Instant::now();
    let out = call.await;
    (out, ms_since(started))
}

/// What a save attempt's outcome leaves to do.
enum Saved {
    Done,
    /// Another writer saved first (or our answer was lost): this is the session now.
    Reread(Box<Snapshot>),
}

impl ChatService {
    /// Runs one turn. With an idempotency key, a retry of a saved turn gets the saved reply,
    /// and the model is not asked again.
    pub async fn send(&self, turn: &TurnRequest) -> Result<Reply, ChatError> {
        let mut asking = match self.prepare(turn).await? {
            Prepared::Replayed(reply) => return Ok(reply),
            Prepared::Ask(asking) => asking,
        };
        // A fold runs beside the reply, never before it.
        let fold = self.run_fold(
            &turn.session,
            asking.fold.take(),
            asking.model_deadline,
            asking.spend.as_ref(),
        );
        let reply = self.model.complete(&asking.prompt, asking.model_deadline);
        let ((completion, model_ms), fold) = tokio::join!(timed(reply), fold);
        let completion = match completion {
            Ok(c) => c,
            Err(e) => return Err(self.released(turn, &asking.snapshot, e.into()).await),
        };
        let answered = Answered {
            completion,
            fold,
            model_ms,
            pieces: None,
        };
        self.save_answered(turn, *asking, answered).await
    }

    /// Runs one turn as [`ChatService::send`] does, in a task of its own, so it goes on (and
    /// saves) whoever reads its events; see [`TurnEvent`] for what it reports. What is saved is
    /// exactly the pieces sent, and only once the model has finished; a model that fails,
    /// times out or stops mid-answer leaves the session as it was.
    pub fn stream(self: &Arc<Self>, turn: TurnRequest) -> mpsc::UnboundedReceiver<TurnEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let chat = Arc::clone(self);
        tokio::spawn(async move {
            let result = chat.send_streaming(&turn, &tx).await;
            // A client gone away does not stop the turn: the run is saved all the same.
            let _ = tx.send(TurnEvent::Finished(result));
        });
        rx
    }

    async fn send_streaming(
        &self,
        turn: &TurnRequest,
        events: &mpsc::UnboundedSender<TurnEvent>,
    ) -> Result<Reply, ChatError> {
        let mut asking = match self.prepare(turn).await? {
            Prepared::Replayed(reply) => return Ok(reply),
            Prepared::Ask(asking) => asking,
        };
        let live = self.live_writer(turn).await;
        let _ = events.send(TurnEvent::Asking);
        // A fold is asked once the reply's first piece has come (docs/context.md): an engine
        // serving both calls at once, as one local server does, would otherwise take in the
        // fold's prompt before the reply's first token. `Some(false)`: the reply failed first.
        let (gate, mut opened) = tokio::sync::watch::channel(None::<bool>);
        let job = asking.fold.take();
        let fold = async {
            job.as_ref()?;
            match opened.wait_for(Option::is_some).await.map(|go| *go) {
                Ok(Some(true)) => {
                    let (deadline, spend) = (asking.model_deadline, asking.spend.as_ref());
                    self.run_fold(&turn.session, job, deadline, spend).await
                }
                _ => None,
            }
        };
        let mut streamed = String::new();
        let mut lengths = Vec::new();
        let mut first_piece = None;
        let model_started = Instant::now();
        let mut forward = |piece: &str| {
            first_piece.get_or_insert_with(|| {
                gate.send_replace(Some(true));
                ms_since(model_started)
            });
            streamed.push_str(piece);
            lengths.push(piece.len());
            if let Some(live) = &live {
                live.push(piece);
            }
            let _ = events.send(TurnEvent::Delta(piece.to_owned()));
        };
        let (done, done_rx) = tokio::sync::watch::channel(false);
        let (cancel, mut cancelled) = tokio::sync::watch::channel(false);
        let keep = async {
            if let Some(live) = &live {
                if live.keep_until(done_rx).await == LiveWrite::Cancelled {
                    cancel.send_replace(true);
                }
            }
        };
        let reply = async {
            let streamed = self
                .model
                .stream(&asking.prompt, asking.model_deadline, &mut forward);
            // `None`: a client cancelled the reply mid-stream.
            let (completion, ms) = tokio::select! {
                (completion, ms) = timed(streamed) => (Some(completion), ms),
                _ = cancelled.wait_for(|c| *c) => (None, ms_since(model_started)),
            };
            done.send_replace(true);
            let ok = matches!(completion, Some(Ok(_)));
            gate.send_if_modified(|go| go.is_none() && go.replace(ok).is_none());
            (completion, ms)
        };
        let ((completion, model_ms), fold, ()) = tokio::join!(reply, fold, keep);
        let failed = |e: ChatError| async {
            if let Some(live) = &live {
                live.end().await;
            }
            self.released(turn, &asking.snapshot, e).await
        };
        let mut completion = match completion {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err(failed(e.into()).await),
            None => return Err(failed(ChatError::Cancelled).await),
        };
        // Stored is what the client was sent, piece for piece.
        completion.text = streamed;
        let answered = Answered {
            completion,
            fold,
            model_ms,
            pieces: Some(lengths),
        };
        let saved = self.save_answered(turn, *asking, answered).await;
        if let Some(live) = &live {
            // Saved, the run has the reply; not saved, nothing is stored: either way the
            // pieces go (after the save, so a follower finds one or the other).
            live.end().await;
        }
        let mut reply = saved?;
        reply.timings.first_piece_ms = first_piece;
        Ok(reply)
    }

    /// The keeper of a streamed reply while it is written, when the client knows its run (it
    /// can follow it after a reload); its item exists before the client hears the reply began.
    async fn live_writer(&self, turn: &TurnRequest) -> Option<LiveWriter> {
        let run_id = turn
            .extras
            .run_id
            .as_ref()
            .filter(|_| self.settings.resumable)?;
        let writer = LiveWriter::new(
            Arc::clone(&self.store),
            turn.session.clone(),
            run_id.clone(),
            turn.deadline,
            self.settings.live_every,
        );
        writer
            .begin(turn.extras.record.as_deref())
            .await
            .then_some(writer)
    }

    /// Reads the session (and the key's receipt), folds the summary when asked to, and builds
    /// the prompt: everything a turn does before the model answers.
    async fn prepare(&self, turn: &TurnRequest) -> Result<Prepared, ChatError> {
        let mut timings = Timings::default();
        let started = Instant::now();
        let (snapshot, admitted) = match self.read(turn).await? {
            Read::Done(done) => return Ok(done),
            Read::Session(snapshot, admitted) => (*snapshot, admitted),
        };
        if let (Some(have), Some(want)) = (snapshot.owner.as_deref(), &turn.owner) {
            if have != want.as_str() {
                return Err(self.released(turn, &snapshot, ChatError::Forbidden).await);
            }
        }
        if let Some(key) = &turn.idempotency_key {
            let receipt = self.store.receipt(&turn.session, &snapshot, key);
            let found = match bounded(turn.deadline, receipt).await {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => return Err(self.released(turn, &snapshot, e.into()).await),
                Err(e) => return Err(self.released(turn, &snapshot, e).await),
            };
            if let Some(receipt) = found {
                // The turn stores nothing: its slot (a log session's) is given back, and the
                // count it took (a replay is not a turn).
                let replayed = replay(receipt, &turn.say, timings);
                self.release(turn, &snapshot).await;
                if let Ok(Admitted {
                    counted: Some(counter),
                    ..
                }) = &admitted
                {
                    self.give_back(counter, turn.deadline).await;
                }
                return replayed.map(Prepared::Replayed);
            }
        }
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(e) => return Err(self.released(turn, &snapshot, e).await),
        };
        if let Some(after) = &turn.extras.after {
            // Chained after a run that is no longer the path's last: the caller branches.
            if snapshot.memory.runs.last().map(|r| r.id.as_str()) != Some(after.as_str()) {
                if let Some(counter) = &admitted.counted {
                    self.give_back(counter, turn.deadline).await;
                }
                return Err(self.released(turn, &snapshot, ChatError::NotLast).await);
            }
        }
        timings.load_ms = ms_since(started);
        let message = match self.message_of(turn, &snapshot) {
            Ok(message) => message,
            Err(e) => return Err(self.released(turn, &snapshot, e).await),
        };

        let model_started = Instant::now();
        let model_deadline = turn.deadline.cap(
            model_started + self.settings.model_timeout,
            self.settings.save_reserve,
            model_started,
        );
        let summarize = self.settings.summarize;
        let plan = plan_window(
            &snapshot.memory.runs,
            snapshot.window_from.as_deref(),
            self.settings.history_token_budget,
            session_scale(snapshot.token_scale),
            summarize,
        );
        let fold = plan
            .step_to
            .filter(|_| summarize)
            .and_then(|to| self.fold_job(&snapshot, to));
        let mut messages = build_prompt(
            self.settings.system_prompt.as_deref(),
            snapshot
                .summary
                .as_ref()
                .filter(|_| summarize)
                .map(|s| s.text.as_str()),
            &snapshot.memory.runs[plan.start..],
            &message,
        );
        extend_prompt(&mut messages, &turn.extras);
        let prompt = Prompt {
            messages,
            cache_key: Some(cache_key(&turn.session)),
            options: turn.extras.options,
            tools: turn.extras.tools.clone(),
            tool_choice: turn.extras.tool_choice.clone(),
        };
        Ok(Prepared::Ask(Box::new(Asking {
            snapshot,
            message,
            prompt,
            step_to: plan.step_to,
            fold,
            model_deadline,
            timings,
            spend: admitted.spend,
        })))
    }

    /// The session's read and the quota check: beside each other for a new message; in turn
    /// for a regeneration or an edit, whose refusals come before it takes a place.
    async fn read(&self, turn: &TurnRequest) -> Result<Read, ChatError> {
        let branch = turn.say.branch();
        let (loaded, admitted) = match branch {
            Branch::Append => {
                let load = self.store.load_branch(&turn.session, &branch);
                // The quotas are checked beside the read: no wait of their own.
                tokio::join!(bounded(turn.deadline, load), self.admit(turn))
            }
            Branch::Regenerate | Branch::Edit(_) => {
                let admitted = self.admit(turn).await?;
                if let Some(done) = self.before_fork(turn, &admitted).await? {
                    return Ok(Read::Done(done));
                }
                let load = self.store.load_branch(&turn.session, &branch);
                (bounded(turn.deadline, load).await, Ok(admitted))
            }
        };
        let snapshot = match loaded.and_then(|r| r.map_err(ChatError::from)) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                // Nothing was taken: the count is given back.
                if let Ok(Admitted {
                    counted: Some(counter),
                    ..
                }) = &admitted
                {
                    self.give_back(counter, turn.deadline).await;
                }
                return Err(e);
            }
        };
        Ok(Read::Session(Box::new(snapshot), admitted))
    }

    /// What can refuse a regeneration or an edit, checked before it takes a place among the
    /// versions (docs/storage.md, "Versions"): a refused one leaves no trace. Another owner's
    /// session is forbidden; a keyed retry of one saved is replayed (its edited run may have
    /// left the path since). The quota was checked before this.
    async fn before_fork(
        &self,
        turn: &TurnRequest,
        admitted: &Admitted,
    ) -> Result<Option<Prepared>, ChatError> {
        let refused = |e: ChatError| async move {
            if let Some(counter) = &admitted.counted {
                self.give_back(counter, turn.deadline).await;
            }
            e
        };
        if let Some(want) = &turn.owner {
            let owner = bounded(turn.deadline, self.store.owner_of(&turn.session)).await;
            match owner.and_then(|r| r.map_err(ChatError::from)) {
                Ok(Some(have)) if have != want.as_str() => {
                    return Err(refused(ChatError::Forbidden).await)
                }
                Ok(_) => {}
                Err(e) => return Err(refused(e).await),
            }
        }
        let Some(key) = &turn.idempotency_key else {
            return Ok(None);
        };
        let read = match bounded(turn.deadline, self.store.load(&turn.session)).await {
            Ok(Ok(read)) => read,
            Ok(Err(e)) => return Err(refused(e.into()).await),
            Err(e) => return Err(refused(e).await),
        };
        let found = bounded(turn.deadline, self.store.receipt(&turn.session, &read, key)).await;
        self.release(turn, &read).await;
        match found.and_then(|r| r.map_err(ChatError::from)) {
            // A replay takes no count, and a key used for another request neither.
            Ok(Some(receipt)) => match replay(receipt, &turn.say, Timings::default()) {
                Ok(reply) => {
                    if let Some(counter) = &admitted.counted {
                        self.give_back(counter, turn.deadline).await;
                    }
                    Ok(Some(Prepared::Replayed(reply)))
                }
                Err(e) => Err(refused(e).await),
            },
            Ok(None) => Ok(None),
            Err(e) => Err(refused(e).await),
        }
    }

    /// Checks the caller's quotas (docs/storage.md, "Quotas"): counts the turn in its minute
    /// unless the minute's quota is spent, and reads the day's tokens.
    async fn admit(&self, turn: &TurnRequest) -> Result<Admitted, ChatError> {
        let limits = self.settings.quotas;
        if limits.is_off() {
            return Ok(Admitted::default());
        }
        let now = crate::store::item::Now::current().secs;
        let who = quota::who(turn.owner.as_ref(), &turn.session);
        let turns = limits
            .turns_per_minute
            .map(|limit| (quota::turns(&who, now), limit));
        let tokens = limits
            .tokens_per_day
            .map(|limit| (quota::tokens(&who, now), limit));
        let count = async {
            match &turns {
                Some((counter, limit)) => self.store.count_turn(counter, *limit).await.map(Some),
                None => Ok(None),
            }
        };
        let spent = async {
            match &tokens {
                Some((counter, _)) => self.store.tokens_spent(counter).await.map(Some),
                None => Ok(None),
            }
        };
        let (count, spent) =
            tokio::join!(bounded(turn.deadline, count), bounded(turn.deadline, spent));
        let counted = match (turns, count??) {
            (Some((counter, _)), Some(false)) => {
                return Err(ChatError::QuotaExceeded {
                    kind: QuotaKind::TurnsPerMinute,
                    retry_after: counter.retry_after,
                })
            }
            (Some((counter, _)), Some(true)) => Some(counter),
            _ => None,
        };
        let spent = match spent.and_then(|r| r.map_err(ChatError::from)) {
            Ok(spent) => spent,
            Err(e) => {
                // The turn fails: the count it took is given back.
                if let Some(counted) = &counted {
                    self.give_back(counted, turn.deadline).await;
                }
                return Err(e);
            }
        };
        if let (Some((counter, limit)), Some(spent)) = (&tokens, spent) {
            if spent >= *limit {
                if let Some(counted) = &counted {
                    self.give_back(counted, turn.deadline).await;
                }
                return Err(ChatError::QuotaExceeded {
                    kind: QuotaKind::TokensPerDay,
                    retry_after: counter.retry_after,
                });
            }
        }
        Ok(Admitted {
            counted,
            spend: tokens.map(|(counter, _)| counter),
        })
    }

    /// Gives back a turn's count; a failure only costs the caller one turn of the minute.
    async fn give_back(&self, counter: &Counter, deadline: Deadline) {
        match bounded(deadline, self.store.uncount_turn(counter)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error::chain(&e), "a quota count was not given back")
            }
            Err(_) => tracing::warn!("a quota count was not given back in time"),
        }
    }

    /// Counts an answer's tokens, as the provider reported them, on the day's counter.
    /// Counts an answer's tokens, as the provider reported them, on the day's counter, within
    /// the invocation's time (a count not made in time is logged, the turn goes on).
    pub(super) async fn spend(
        &self,
        counter: Option<&Counter>,
        usage: Option<Usage>,
        deadline: Deadline,
    ) {
        let (Some(counter), Some(usage)) = (counter, usage) else {
            return;
        };
        let tokens = usage.prompt_tokens.saturating_add(usage.completion_tokens);
        match bounded(deadline, self.store.spend_tokens(counter, tokens)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error::chain(&e), tokens, "an answer's tokens were not counted")
            }
            Err(_) => tracing::warn!(tokens, "an answer's tokens were not counted in time"),
        }
    }

    /// Saves an answered turn and, beside the save, counts its tokens on the caller's day.
    async fn save_answered(
        &self,
        turn: &TurnRequest,
        asking: Asking,
        answered: Answered,
    ) -> Result<Reply, ChatError> {
        let counter = asking.spend.clone();
        let spend = self.spend(counter.as_ref(), answered.completion.usage, turn.deadline);
        let (saved, ()) = tokio::join!(self.save_turn(turn, asking, answered), spend);
        saved
    }

    /// Appends the model's answer to the session and saves it: conditional on the version
    /// read, re-reading and appending again after another writer's save, recognising a save
    /// of ours whose answer was lost, and replaying a racing request's receipt.
    async fn save_turn(
        &self,
        turn: &TurnRequest,
        asking: Asking,
        answered: Answered,
    ) -> Result<Reply, ChatError> {
        let Asking {
            mut snapshot,
            message,
            prompt,
            step_to,
            mut timings,
            ..
        } = asking;
        let context = ContextChange {
            stepped: step_to.is_some(),
            folded: answered.fold.as_ref().map(Option::is_some),
        };
        let Answered {
            completion,
            fold,
            model_ms,
            pieces,
        } = answered;
        let summary = fold.flatten();
        timings.model_ms = model_ms;
        if completion.truncated {
            tracing::warn!(session_id = %turn.session, "the model's answer was cut off at its length limit");
        }
        let calls = completion.calls;
        let run = new_run(turn, &message, completion.text, &calls);
        // The next window's first run: the one the window stepped to, or this one if every
        // earlier run left it.
        let window_from = step_to.map(|i| match snapshot.memory.runs.get(i) {
            Some(first) => first.id.clone(),
            None => run.id.clone(),
        });
        let token_scale = self.calibrated(turn, &snapshot, completion.usage, &prompt);
        let record = (turn.extras.record.as_deref())
            .map(|r| record_with(r, completion.usage, pieces.as_deref(), &calls));
        let receipt = receipt_of(turn, &run);
        let save_started = Instant::now();
        let mut backoff = Duration::from_millis(10);
        for attempt in 1..=self.settings.max_save_attempts {
            timings.save_attempts = attempt;
            let changes = SaveInput {
                run: &run,
                record: record.as_deref(),
                receipt: receipt.as_ref(),
                summary: summary.as_ref(),
                window_from: window_from.as_deref(),
                token_scale,
            };
            let outcome = match self.save_once(turn, &snapshot, changes).await {
                Ok(outcome) => outcome,
                Err(e) => return Err(self.released(turn, &snapshot, e).await),
            };
            let saved = match outcome {
                Ok(()) => Saved::Done,
                Err(StoreError::Conflict) => {
                    // Someone saved in between, or our own save landed and its answer was lost
                    // (the SDK then retried it into a conflict). Read again: if our run is
                    // there, the turn is done; else add it after theirs. The model is not asked
                    // again; its answer stands.
                    let jitter = rand::random_range(0..=backoff.as_millis() as u64);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(200));
                    Saved::Reread(Box::new(self.reread(turn).await?))
                }
                Err(StoreError::ReceiptExists) => {
                    // A retry of this request saved first: its run stands, ours is dropped.
                    self.release(turn, &snapshot).await;
                    return self.replay_racing(turn, attempt, timings).await;
                }
                Err(e) => return Err(self.released(turn, &snapshot, e.into()).await),
            };
            match saved {
                Saved::Reread(now) if !now.holds_run(&run.id) => snapshot = *now,
                saved => {
                    if let Saved::Reread(now) = saved {
                        // The read again took a slot of its own, which stores nothing.
                        self.release(turn, &now).await;
                    }
                    timings.save_ms = ms_since(save_started);
                    return Ok(Reply {
                        run_id: run.id,
                        text: run.output,
                        usage: completion.usage,
                        replayed: false,
                        timings,
                        context,
                        calls,
                        record,
                    });
                }
            }
        }
        let busy = ChatError::Busy(self.settings.max_save_attempts);
        Err(self.released(turn, &snapshot, busy).await)
    }

    /// The session's new calibration from the provider's report of the prompt sent, if it
    /// moves it; a report that cannot be right is logged once per session in this process
    /// (docs/context.md, "Counting tokens") and leaves the session's scale as it was.
    fn calibrated(
        &self,
        turn: &TurnRequest,
        snapshot: &Snapshot,
        usage: Option<Usage>,
        prompt: &Prompt,
    ) -> Option<u64> {
        let estimated = prompt_tokens(&prompt.messages);
        let reported = usage.map(|u| u.prompt_tokens);
        match calibration(reported, estimated, self.settings.history_token_budget) {
            Calibration::Scale(scale) => Some(scale),
            Calibration::Unjudged => None,
            Calibration::Implausible => {
                if self.implausible_logged.first(turn.session.as_str()) {
                    tracing::warn!(
                        session_id = %turn.session,
                        reported = reported.unwrap_or_default(),
                        estimated,
                        token_scale = session_scale(snapshot.token_scale),
                        "a token report implausible for the prompt was ignored"
                    );
                }
                None
            }
        }
    }

    /// The message a turn answers: the request's, or for a regeneration the replaced run's.
    fn message_of(&self, turn: &TurnRequest, snapshot: &Snapshot) -> Result<Message, ChatError> {
        match &turn.say {
            Say::New(message) | Say::Edit(_, message) => Ok(message.clone()),
            Say::Regenerate => {
                let fork = snapshot.log.as_ref().and_then(|l| l.fork.as_ref());
                let stored = fork.and_then(|f| f.message.as_deref()).unwrap_or_default();
                // A stored message is never blank; one that is has nothing to answer again.
                Message::parse(stored, usize::MAX).map_err(|_| ChatError::RunNotFound)
            }
        }
    }

    /// Gives back what the read took for a turn that stores nothing (a log session's slot
    /// becomes a hole, so the writers after it are not kept waiting); a failure to is logged,
    /// and the slot is filled by a later reader.
    async fn release(&self, turn: &TurnRequest, snapshot: &Snapshot) {
        if snapshot.log.is_none() {
            return;
        }
        let released = bounded(turn.deadline, self.store.release(&turn.session, snapshot)).await;
        if let Some(e) = match released {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(ChatError::from(e)),
            Err(e) => Some(e),
        } {
            tracing::warn!(session_id = %turn.session, error = %crate::error::chain(&e), "a slot was not given back");
        }
    }

    /// [`Self::release`], then the error the turn answers with.
    async fn released(
        &self,
        turn: &TurnRequest,
        snapshot: &Snapshot,
        error: ChatError,
    ) -> ChatError {
        self.release(turn, snapshot).await;
        error
    }

    /// One conditional save of the session read as `snapshot` with the run appended. Cut off
    /// mid-save, it may have landed: a retry with the same key finds out.
    async fn save_once(
        &self,
        turn: &TurnRequest,
        snapshot: &Snapshot,
        input: SaveInput<'_>,
    ) -> Result<Result<(), StoreError>, ChatError> {
        let memory = self.appended(snapshot, input.run);
        let changes = Changes {
            memory: &memory,
            receipt: input.receipt,
            summary: input.summary,
            window_from: input.window_from,
            token_scale: input.token_scale,
            owner: turn.owner.as_ref().map(OwnerKey::as_str),
            record: input.record,
        };
        bounded(
            turn.deadline,
            self.store.save(&turn.session, changes, snapshot),
        )
        .await
        .map_err(|_| ChatError::SaveUnconfirmed)
    }

    /// The session's memory with `run` appended, in the shape and bounds the settings ask for.
    fn appended(&self, snapshot: &Snapshot, run: &Run) -> Memory {
        let mut memory = snapshot.memory.clone();
        if snapshot.fresh {
            memory.format = self.settings.new_session_format;
        }
        if self.settings.max_runs.is_some() {
            memory.max_runs = self.settings.max_runs;
        }
        memory.push(run.clone());
        memory
    }

    /// The session after a conflicting save; out of time, the save may have landed.
    async fn reread(&self, turn: &TurnRequest) -> Result<Snapshot, ChatError> {
        bounded(turn.deadline, self.store.load(&turn.session))
            .await
            .map_err(|_| ChatError::SaveUnconfirmed)?
            .map_err(ChatError::from)
    }

    /// The reply a racing request with the same key saved.
    async fn replay_racing(
        &self,
        turn: &TurnRequest,
        attempt: u32,
        timings: Timings,
    ) -> Result<Reply, ChatError> {
        let key = turn
            .idempotency_key
            .as_ref()
            .ok_or(ChatError::Busy(attempt))?;
        let snapshot = bounded(turn.deadline, self.store.load(&turn.session)).await??;
        let found = bounded(
            turn.deadline,
            self.store.receipt(&turn.session, &snapshot, key),
        )
        .await;
        self.release(turn, &snapshot).await;
        let found = found??;
        replay(found.ok_or(ChatError::Busy(attempt))?, &turn.say, timings)
    }
}

/// What one save adds to the session read.
#[derive(Clone, Copy)]
struct SaveInput<'a> {
    run: &'a Run,
    /// What the caller keeps with the run, the usage added.
    record: Option<&'a str>,
    receipt: Option<&'a Receipt>,
    summary: Option<&'a Summary>,
    /// The window stepped: its new first run.
    window_from: Option<&'a str>,
    /// The calibration the provider's report gave.
    token_scale: Option<u64>,
}

/// Sessions something was logged for, once each, in this process: 64-bit digests of their
/// keys, up to [`LoggedOnce::MAX`]; past it the set is forgotten at once and starts over.
#[derive(Default)]
pub(super) struct LoggedOnce(Mutex<HashSet<u64>>);

impl LoggedOnce {
    const MAX: usize = 10_000;

    /// True the first time for `session` (since the set last started over).
    pub(super) fn first(&self, session: &str) -> bool {
        let mut hasher = DefaultHasher::new();
        session.hash(&mut hasher);
        let digest = hasher.finish();
        let mut logged = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if logged.len() >= Self::MAX && !logged.contains(&digest) {
            logged.clear();
        }
        logged.insert(digest)
    }
}

/// A Responses API turn's additions to its prompt (docs/context.md, "The prompt"):
/// - function results: the previous reply (the history's last message) becomes the assistant
///   message with its calls, and the results follow it in place of the message;
/// - instructions: just before the message (after the results), so the history before them
///   stays a cached prefix.
fn extend_prompt(messages: &mut Vec<ChatMessage>, extras: &super::TurnExtras) {
    if let Some(results) = &extras.results {
        messages.pop();
        if messages.last().is_some_and(|m| m.role == Role::Assistant) {
            messages.pop();
        }
        messages.push(ChatMessage {
            tool_calls: Some(results.calls.clone()),
            ..ChatMessage::new(Role::Assistant, results.text.as_str())
        });
        for (call_id, output) in &results.outputs {
            messages.push(ChatMessage {
                tool_call_id: Some(call_id.clone()),
                ..ChatMessage::new(Role::Tool, output.as_str())
            });
        }
    }
    if let Some(instructions) = &extras.instructions {
        let at = match extras.results {
            Some(_) => messages.len(),
            None => messages.len().saturating_sub(1),
        };
        messages.insert(at, ChatMessage::new(Role::System, instructions.as_str()));
    }
}

/// How a reply of function calls alone is kept as a run's text (griptape's view, later
/// prompts): one line a call, `[function call] name(arguments)`.
pub fn render_calls(calls: &[crate::model::ToolCall]) -> String {
    calls
        .iter()
        .map(|c| format!("[function call] {}({})", c.name, c.arguments))
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a keyed turn leaves for its retries.
fn receipt_of(turn: &TurnRequest, run: &Run) -> Option<Receipt> {
    turn.idempotency_key.as_ref().map(|key| Receipt {
        key: key.clone(),
        message_digest: turn.say.digest(),
        run_id: run.id.clone(),
        reply: run.output.clone(),
    })
}

/// The turn's run: the message and the reply (a reply of function calls alone as their
/// rendering), under the id the caller minted, if it did.
fn new_run(
    turn: &TurnRequest,
    message: &Message,
    reply: String,
    calls: &[crate::model::ToolCall],
) -> Run {
    let reply = match reply.trim().is_empty() {
        true => render_calls(calls),
        false => reply,
    };
    let mut run = Run::new(message.as_str(), reply);
    if let Some(id) = &turn.extras.run_id {
        run.id = id.clone();
    }
    run
}

/// A caller's record (a JSON object) with the answer's usage added as `usage`:
/// `{"input_tokens", "output_tokens", "cached_tokens"}` (`null` when the provider reported none),
/// and a streamed reply's piece lengths in bytes as `pieces`.
fn record_with(
    record: &str,
    usage: Option<Usage>,
    pieces: Option<&[usize]>,
    calls: &[crate::model::ToolCall],
) -> String {
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(record).unwrap_or_default();
    let usage = usage.map(|u| {
        serde_json::json!({
            "input_tokens": u.prompt_tokens,
            "output_tokens": u.completion_tokens,
            "cached_tokens": u.cached_tokens.unwrap_or(0),
        })
    });
    fields.insert("usage".into(), usage.unwrap_or(serde_json::Value::Null));
    if let Some(pieces) = pieces {
        fields.insert("pieces".into(), serde_json::json!(pieces));
    }
    if !calls.is_empty() {
        let calls: Vec<_> = calls
            .iter()
            .map(|c| serde_json::json!({"call_id": c.id, "name": c.name, "arguments": c.arguments}))
            .collect();
        fields.insert("calls".into(), serde_json::Value::Array(calls));
    }
    let completed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    fields.insert("completed_at".into(), serde_json::json!(completed));
    serde_json::Value::Object(fields).to_string()
}

/// The prefix-cache routing key of a session: a digest of its stored key, never the id.
fn cache_key(session: &SessionKey) -> String {
    let digest = sha256_hex(session.as_str());
    digest[..32.min(digest.len())].to_owned()
}

fn replay(receipt: Receipt, say: &Say, timings: Timings) -> Result<Reply, ChatError> {
    if receipt.message_digest != say.digest() {
        return Err(ChatError::KeyReused);
    }
    Ok(Reply {
        run_id: receipt.run_id,
        text: receipt.reply,
        usage: None,
        replayed: true,
        timings,
        context: ContextChange::default(),
        calls: Vec::new(),
        record: None,
    })
}
