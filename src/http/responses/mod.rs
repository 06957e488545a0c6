//! The Responses API (`/v1/...`, docs/responses.md): Open Responses' `POST /v1/responses` and
//! the stored responses and conversations beside it, on the same chat cycle, table and memory
//! as `POST /chat`. A conversation is a session; a response is a run of it, named by an id that
//! says which (so it is found from its id alone); errors come in the Responses shape.
//!
//! - `request`: bodies and ids as typed values;
//! - `object`: the API's objects as JSON;
//! - `events`: a response as semantic server-sent events;
//! - `conversations`: `/v1/conversations` and its items.

mod conversations;
mod events;
mod object;
mod request;

use lambda_http::http::{Method, StatusCode};
use lambda_http::RequestExt;
use serde_json::{json, Value};

use super::extract::{body_bytes, idempotency_key, percent_decode};
use super::{json_ok, stream, Answer, ApiError, App, Call};
use crate::chat::{ChatError, Place, Say, ToolResults, TurnExtras, TurnRequest};
use crate::input::{SessionId, SessionKey};
use events::ResponseEvents;
use object::{now_secs, Record, Response, Status, StoredCall};
use request::{parse_create, Chain, Half, ResponseId};

/// The Responses API's routes, below `/v1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route<'a> {
    Responses,
    Response(&'a str),
    InputItems(&'a str),
    Cancel(&'a str),
    Conversations,
    Conversation(&'a str),
    Items(&'a str),
    Item(&'a str, &'a str),
    NotFound,
}

impl<'a> Route<'a> {
    /// The route of a path below `/v1` (`rest` is what follows it).
    pub fn of(rest: &'a str) -> Route<'a> {
        let parts: Vec<&str> = rest.split('/').skip(1).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Route::NotFound;
        }
        match parts.as_slice() {
            ["responses"] => Route::Responses,
            ["responses", id] => Route::Response(id),
            ["responses", id, "input_items"] => Route::InputItems(id),
            ["responses", id, "cancel"] => Route::Cancel(id),
            ["conversations"] => Route::Conversations,
            ["conversations", id] => Route::Conversation(id),
            ["conversations", id, "items"] => Route::Items(id),
            ["conversations", id, "items", item] => Route::Item(id, item),
            _ => Route::NotFound,
        }
    }
}

impl App {
    pub(super) async fn responses_route(
        &self,
        call: &Call<'_>,
        route: Route<'_>,
    ) -> Result<Answer, ApiError> {
        let method = call.request.method().clone();
        let not_allowed = |allowed| ApiError::MethodNotAllowed {
            method: method.to_string(),
            allowed,
        };
        let whole =
            |r: Result<Value, ApiError>| r.map(|v| Answer::Whole(json_ok(StatusCode::OK, &v)));
        match route {
            Route::Responses => match method {
                Method::POST => self.create_response(call).await,
                _ => Err(not_allowed("POST")),
            },
            Route::Response(id) => match method {
                Method::GET => self.get_response(call, id).await,
                Method::DELETE => whole(self.delete_response(call, id).await),
                _ => Err(not_allowed("GET, DELETE")),
            },
            Route::InputItems(id) => match method {
                Method::GET => whole(self.input_items(call, id).await),
                _ => Err(not_allowed("GET")),
            },
            Route::Cancel(id) => match method {
                Method::POST => whole(self.cancel_response(call, id).await),
                _ => Err(not_allowed("POST")),
            },
            Route::Conversations => match method {
                Method::POST => whole(self.create_conversation(call).await),
                _ => Err(not_allowed("POST")),
            },
            Route::Conversation(id) => match method {
                Method::GET => whole(self.get_conversation(call, id).await),
                Method::POST => whole(self.update_conversation(call, id).await),
                Method::DELETE => whole(self.delete_conversation(call, id).await),
                _ => Err(not_allowed("GET, POST, DELETE")),
            },
            Route::Items(id) => match method {
                Method::GET => whole(self.list_items(call, id).await),
                Method::POST => whole(self.add_items(call, id).await),
                _ => Err(not_allowed("GET, POST")),
            },
            Route::Item(id, item) => match method {
                Method::GET => whole(self.get_item(call, id, item).await),
                Method::DELETE => whole(self.delete_item(call, id, item).await),
                _ => Err(not_allowed("GET, DELETE")),
            },
            Route::NotFound => Err(ApiError::NotFound(format!(
                "{method} {}",
                call.request.raw_http_path()
            ))),
        }
    }

    /// The response a path's segment names, and the caller's key of its session.
    fn response_of(
        &self,
        call: &Call<'_>,
        segment: &str,
    ) -> Result<(ResponseId, SessionKey), ApiError> {
        let raw = percent_decode(segment).ok_or(ApiError::BadPath)?;
        let id = ResponseId::parse(&raw).ok_or_else(|| ApiError::ResponseNotFound(raw.clone()))?;
        call.about(id.session.clone());
        let key = self.session_key(call.request, &id.session)?;
        Ok((id, key))
    }

    /// `POST /v1/responses`: one turn, answered whole or as semantic events.
    async fn create_response(&self, call: &Call<'_>) -> Result<Answer, ApiError> {
        let body = parse_create(
            body_bytes(call.request.body()),
            self.settings.max_message_bytes,
        )?;
        if body.tools.for_model.is_some() && !self.chat.takes_tools() {
            return Err(ApiError::Unsupported {
                param: "tools".into(),
                message:
                    "this deployment's model client takes no functions (MODEL_PROVIDER=bedrock)"
                        .into(),
            });
        }
        let key = idempotency_key(call.request)?;
        let (session_id, previous, conversation) = match &body.chain {
            // A keyed retry of a response alone must reach the conversation the first made.
            Chain::Alone => (
                SessionId::parse(&conversations::mint_id(key.as_ref()))?,
                None,
                None,
            ),
            Chain::After(prev) => (prev.session.clone(), Some(prev), None),
            Chain::Conversation(id) => (id.clone(), None, Some(id.as_str().to_owned())),
        };
        let session_id = call.about(session_id);
        let session = self.session_key(call.request, session_id)?;
        // Chained after the run the view shows last: the turn's read checks it is still last
        // (else it branches). Otherwise, or with function results, a lookup.
        let shown_last = match previous.filter(|_| body.outputs.is_empty()) {
            Some(prev) => self.shown_last(call, &session, prev).await?,
            None => false,
        };
        let (say, results, after) = match previous {
            None => (Say::New(body.message.clone()), None, None),
            Some(prev) if shown_last => (
                Say::New(body.message.clone()),
                None,
                Some(prev.run.as_str().to_owned()),
            ),
            Some(prev) => {
                let (say, found) = self
                    .after(call, &session, prev, body.message.clone())
                    .await?;
                let results = results_for(&body.outputs, &found, &self.settings.model_id)?;
                (say, results, None)
            }
        };
        let run_id = crate::memory::new_run_id();
        let id = ResponseId::format(&run_id, session_id);
        let record = self.record_of(&body, previous, conversation);
        let mut turn = TurnRequest {
            session,
            say,
            owner: self.response_owner(call, body.user.as_deref())?,
            idempotency_key: key,
            deadline: call.deadline,
            extras: TurnExtras {
                run_id: Some(run_id.clone()),
                instructions: body.instructions.clone(),
                options: body.options,
                record: Some(serde_json::to_string(&record).unwrap_or_default()),
                tools: body.tools.for_model.clone(),
                tool_choice: body.tools.choice_for_model.clone(),
                results,
                after,
            },
        };
        loop {
            let answer = if body.stream {
                let mut events = ResponseEvents::new(
                    id.clone(),
                    run_id.clone(),
                    record.clone(),
                    session_id.clone(),
                );
                events.log = Some((
                    call.request_id().to_owned(),
                    session_id.clone(),
                    call.started,
                ));
                stream::start(&self.chat, turn.clone(), Box::new(events)).await
            } else {
                self.answer_whole(call, &turn, &record, session_id).await
            };
            match (answer, previous) {
                // Not after the last run: a branch from it, found by a lookup (once).
                (Err(ApiError::Chat(ChatError::NotLast)), Some(prev))
                    if turn.extras.after.is_some() =>
                {
                    let (say, _) = self
                        .after(call, &turn.session, prev, body.message.clone())
                        .await?;
                    turn.say = say;
                    turn.extras.after = None;
                }
                (answer, _) => return answer,
            }
        }
    }

    /// Whether the session's view shows `prev`'s run as its newest (one read of the item).
    async fn shown_last(
        &self,
        call: &Call<'_>,
        session: &SessionKey,
        prev: &ResponseId,
    ) -> Result<bool, ApiError> {
        let about = self.chat.about(session, call.deadline).await?;
        Ok(about.and_then(|a| a.last_run).as_deref() == Some(prev.run.as_str()))
    }

    /// A response answered whole: the saved run's record (a replay's, as first saved).
    async fn answer_whole(
        &self,
        call: &Call<'_>,
        turn: &TurnRequest,
        record: &Record,
        session_id: &SessionId,
    ) -> Result<Answer, ApiError> {
        let reply = self.chat.send(turn).await?;
        super::answered::log_turn(call.request_id(), session_id, &reply, false, call.started);
        // A replay answers with the run first saved under this key, as it was saved.
        let record = match reply.replayed {
            true => {
                let found = self
                    .chat
                    .find_run(&turn.session, &reply.run_id, call.deadline)
                    .await?;
                Record::read(
                    found.and_then(|f| f.record).as_deref(),
                    &self.settings.model_id,
                )
            }
            false => Record::read(reply.record.as_deref(), &record.model),
        };
        let id = ResponseId::format(&reply.run_id, session_id);
        let response = Response {
            id: &id,
            run: &reply.run_id,
            record: &record,
            status: Status::Completed,
            text: &reply.text,
            error: None,
        };
        let mut answer = json_ok(StatusCode::OK, &response.json());
        if reply.replayed {
            super::answered::mark_replayed(answer.headers_mut());
        }
        Ok(Answer::Whole(answer))
    }

    /// Whose session a response is in: the token's `sub` in JWT mode; else the `user` a
    /// trusted backend names, if any (as `POST /chat`'s `owner`: listed under it, and a
    /// session of another owner is `403`).
    fn response_owner(
        &self,
        call: &Call<'_>,
        user: Option<&str>,
    ) -> Result<Option<crate::input::OwnerKey>, ApiError> {
        let named = user.filter(|_| self.settings.auth_mode != crate::config::AuthMode::Jwt);
        self.owner(call.request, named).map_err(|e| match e {
            ApiError::Input(crate::input::InputError::Owner) => ApiError::Param {
                param: "user".into(),
                message: "user must be 1-128 letters, digits and -_.:@".into(),
            },
            e => e,
        })
    }

    /// What a new response keeps with its run (the chat cycle adds its usage and calls).
    fn record_of(
        &self,
        body: &request::CreateResponse,
        previous: Option<&ResponseId>,
        conversation: Option<String>,
    ) -> Record {
        Record {
            model: body
                .model
                .clone()
                .unwrap_or_else(|| self.settings.model_id.clone()),
            instructions: body.instructions.clone(),
            metadata: body.metadata.clone(),
            previous_response_id: previous.map(|p| ResponseId::format(p.run.as_str(), &p.session)),
            conversation,
            temperature: body.options.temperature,
            max_output_tokens: body.options.max_output_tokens,
            background: body.background,
            created_at: now_secs(),
            tools: body.tools.given.clone(),
            tool_choice: body.tools.choice.clone(),
            ..Record::default()
        }
    }

    /// What a response after `prev` answers: a new message after it when it is the
    /// conversation's last run, else a new version of the run that followed it (a branch;
    /// docs/responses.md, "Chaining"). A run on another branch is selected first.
    async fn after(
        &self,
        call: &Call<'_>,
        session: &SessionKey,
        prev: &ResponseId,
        message: crate::input::Message,
    ) -> Result<(Say, crate::chat::FoundRun), ApiError> {
        let not_found = || ApiError::Param {
            param: "previous_response_id".into(),
            message: "previous_response_id names no stored response".into(),
        };
        for _ in 0..2 {
            let found = self
                .chat
                .find_run(session, prev.run.as_str(), call.deadline)
                .await?
                .ok_or_else(not_found)?;
            match found.place.clone() {
                Place::Last => return Ok((Say::New(message), found)),
                Place::Before(next) => return Ok((Say::Edit(next, message), found)),
                Place::OffPath => {
                    self.chat
                        .select(session, prev.run.as_str(), call.deadline)
                        .await?
                }
            }
        }
        Err(ChatError::Busy(2).into())
    }

    /// `GET /v1/responses/{id}`, or with `?stream=true` its events again (after
    /// `starting_after`).
    async fn get_response(&self, call: &Call<'_>, segment: &str) -> Result<Answer, ApiError> {
        let (id, session) = self.response_of(call, segment)?;
        let stream = match call.param("stream") {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ApiError::Param {
                    param: "stream".into(),
                    message: "stream must be true or false".into(),
                })
            }
        };
        let starting_after = match call.param("starting_after") {
            None => None,
            Some(n) => Some(n.parse::<u64>().map_err(|_| ApiError::Param {
                param: "starting_after".into(),
                message: "starting_after must be an event's sequence_number".into(),
            })?),
        };
        let id_text = ResponseId::format(id.run.as_str(), &id.session);
        let run = id.run.as_str();
        // A response in progress (or one that failed) is the live item; a saved one, the run.
        let live = self.chat.live(&session, run, call.deadline).await?;
        let found = match &live {
            Some(_) => None,
            None => Some(
                self.chat
                    .find_run(&session, run, call.deadline)
                    .await?
                    .ok_or_else(|| ApiError::ResponseNotFound(segment.to_owned()))?,
            ),
        };
        let stored = match (&live, &found) {
            (Some(l), _) => l.record.as_deref(),
            (None, Some(f)) => f.record.as_deref(),
            (None, None) => None,
        };
        let mut record = Record::read(stored, &self.settings.model_id);
        if record.created_at == 0 {
            record.created_at = found.as_ref().and_then(|f| f.created_at).unwrap_or(0);
        }
        log_read(call, "response read");
        if stream {
            let mut events =
                ResponseEvents::new(id_text, run.to_owned(), record, id.session.clone());
            events.skip_through = starting_after;
            events.following = true;
            let followed = stream::follow(&self.chat, session, run.to_owned(), call.deadline);
            return match stream::start_with(followed, Box::new(events)).await {
                Err(ApiError::Chat(ChatError::RunNotFound)) => {
                    Err(ApiError::ResponseNotFound(segment.to_owned()))
                }
                answer => answer,
            };
        }
        let (status, text) = match (&live, &found) {
            (Some(l), _) => (Status::of(l.status), l.pieces.concat()),
            (None, Some(f)) => (Status::Completed, f.run.output.clone()),
            (None, None) => return Err(ApiError::ResponseNotFound(segment.to_owned())),
        };
        let response = Response {
            id: &id_text,
            run,
            record: &record,
            status,
            text: &text,
            error: None,
        };
        Ok(Answer::Whole(json_ok(StatusCode::OK, &response.json())))
    }

    /// `DELETE /v1/responses/{id}`: the run's texts go from everything stored (as
    /// `DELETE /sessions/{id}/runs/{run}`).
    async fn delete_response(&self, call: &Call<'_>, segment: &str) -> Result<Value, ApiError> {
        let (id, session) = self.response_of(call, segment)?;
        match self
            .chat
            .delete_run(&session, id.run.as_str(), call.deadline)
            .await
        {
            Ok(()) => {}
            Err(ChatError::RunNotFound) => return Err(ApiError::ResponseNotFound(segment.into())),
            Err(e) => return Err(e.into()),
        }
        log_read(call, "response deleted");
        let id = ResponseId::format(id.run.as_str(), &id.session);
        Ok(json!({"id": id, "object": "response", "deleted": true}))
    }

    /// `GET /v1/responses/{id}/input_items`: the user's message the response answered.
    async fn input_items(&self, call: &Call<'_>, segment: &str) -> Result<Value, ApiError> {
        let (id, session) = self.response_of(call, segment)?;
        let found = self
            .chat
            .find_run(&session, id.run.as_str(), call.deadline)
            .await?
            .ok_or_else(|| ApiError::ResponseNotFound(segment.to_owned()))?;
        log_read(call, "input items read");
        let item = object::message_item(
            id.run.as_str(),
            Half::Input,
            &found.run.input,
            Status::Completed,
        );
        Ok(object::list(vec![item], false))
    }

    /// `POST /v1/responses/{id}/cancel`: a response in progress stops (its turn stores
    /// nothing); a saved one cannot be cancelled.
    async fn cancel_response(&self, call: &Call<'_>, segment: &str) -> Result<Value, ApiError> {
        let (id, session) = self.response_of(call, segment)?;
        let run = id.run.as_str();
        if self.chat.cancel(&session, run, call.deadline).await? {
            let live = self.chat.live(&session, run, call.deadline).await?;
            let record = Record::read(
                live.as_ref().and_then(|l| l.record.as_deref()),
                &self.settings.model_id,
            );
            let text = live.map(|l| l.pieces.concat()).unwrap_or_default();
            log_read(call, "response cancelled");
            let id = ResponseId::format(run, &id.session);
            let response = Response {
                id: &id,
                run,
                record: &record,
                status: Status::Cancelled,
                text: &text,
                error: None,
            };
            return Ok(response.json());
        }
        match self.chat.find_run(&session, run, call.deadline).await? {
            None => Err(ApiError::ResponseNotFound(segment.to_owned())),
            Some(_) => Err(ApiError::Param {
                param: "response_id".into(),
                message: "this response is completed: only a response in progress can be cancelled"
                    .into(),
            }),
        }
    }
}

/// A turn answering function results: the previous response's calls (each output must name
/// one of them) and its text, with the outputs; `None` without outputs.
fn results_for(
    outputs: &[(String, String)],
    prev: &crate::chat::FoundRun,
    model: &str,
) -> Result<Option<ToolResults>, ApiError> {
    if outputs.is_empty() {
        return Ok(None);
    }
    let record = Record::read(prev.record.as_deref(), model);
    let calls: Vec<crate::model::ToolCall> = record.calls.iter().map(StoredCall::to_call).collect();
    if let Some((id, _)) = outputs
        .iter()
        .find(|(id, _)| !calls.iter().any(|c| &c.id == id))
    {
        return Err(ApiError::Param {
            param: "input".into(),
            message: format!("the previous response made no function call {id}"),
        });
    }
    let rendered = crate::chat::render_calls(&calls);
    let text = match prev.run.output == rendered {
        true => String::new(),
        false => prev.run.output.clone(),
    };
    Ok(Some(ToolResults {
        calls,
        text,
        outputs: outputs.to_vec(),
    }))
}

/// The request's one line for a read or an edit of the Responses API.
fn log_read(call: &Call<'_>, what: &'static str) {
    tracing::info!(
        request_id = call.request_id(),
        session_id = call.session_id(),
        status = 200,
        outcome = "ok",
        emf = %call.metrics(200),
        "{what}"
    );
}
