//! `/v1/conversations`: a conversation is a session (listed, titled, erased and edited as
//! one; griptape reads it as before). Its items are its runs' halves on the active path: the
//! user's message (`msg_<run>.in`) and the reply (`msg_<run>.out`).

use serde_json::{Map, Value};

use super::object::{self, message_item, Status};
use super::request::{self, message_text, parse_item_id, parse_metadata, Half};
use super::{log_read, App, Call};
use crate::chat::{About, ChatError, Deleted, PageLimit, Span};
use crate::http::extract::{body_bytes, parse_limit, percent_decode};
use crate::http::{ApiError, HISTORY_PAGE_BYTES};
use crate::input::{Message, SessionId, SessionKey};

/// The most items one `POST .../items` adds, and a list page holds by default and at most.
const MAX_ADDED_ITEMS: usize = 20;
const DEFAULT_ITEMS: usize = 20;
const MAX_ITEMS: usize = 100;

/// A new conversation's id: `conv_` and 32 hex digits, random, or for a keyed request the
/// key's digest (its retry reaches the same conversation and is replayed there).
pub fn mint_id(key: Option<&crate::input::IdempotencyKey>) -> String {
    match key {
        Some(key) => {
            let digest = crate::input::sha256_hex(&format!("responses\n{}", key.as_str()));
            format!("conv_{}", &digest[..32])
        }
        None => format!("conv_{}", crate::memory::new_run_id()),
    }
}

/// A request's JSON object body holding no fields but `known`.
fn body_of(call: &Call<'_>, known: &[&str]) -> Result<Map<String, Value>, ApiError> {
    let fields = request::object(body_bytes(call.request.body()))?;
    match fields.keys().find(|k| !known.contains(&k.as_str())) {
        Some(name) => Err(ApiError::Param {
            param: name.clone(),
            message: format!("unknown parameter: {name}"),
        }),
        None => Ok(fields),
    }
}

/// A conversation's metadata as stored (a JSON object's text); `{}` when none.
fn metadata_of(stored: Option<&str>) -> Map<String, Value> {
    stored
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default()
}

impl App {
    fn conversation_of<'c>(
        &self,
        call: &'c Call<'_>,
        segment: &str,
    ) -> Result<(&'c SessionId, SessionKey), ApiError> {
        let raw = percent_decode(segment).ok_or(ApiError::BadPath)?;
        let id = SessionId::parse(&raw).map_err(|_| ApiError::ConversationNotFound(raw.clone()))?;
        let id = call.about(id);
        let key = self.session_key(call.request, id)?;
        Ok((id, key))
    }

    /// The conversation object of a live session; 404 when there is none.
    async fn conversation_read(
        &self,
        call: &Call<'_>,
        id: &SessionId,
        key: &SessionKey,
    ) -> Result<Value, ApiError> {
        let about = self
            .chat
            .about(key, call.deadline)
            .await?
            .ok_or_else(|| ApiError::ConversationNotFound(id.as_str().to_owned()))?;
        let metadata = metadata_of(about.metadata.as_deref());
        Ok(object::conversation(
            id,
            about.created_at.unwrap_or(0),
            &metadata,
        ))
    }

    /// `POST /v1/conversations`: `{"items"?, "metadata"?}`: the session is made at once
    /// (empty, its metadata kept), then its items stored as runs.
    pub(super) async fn create_conversation(&self, call: &Call<'_>) -> Result<Value, ApiError> {
        let fields = body_of(call, &["items", "metadata"])?;
        let metadata = parse_metadata(fields.get("metadata"))?;
        let runs = self.pairs(fields.get("items"))?;
        let id = call.about(SessionId::parse(&mint_id(None))?);
        let key = self.session_key(call.request, id)?;
        let owner = self.owner(call.request, None)?;
        let about = About {
            metadata: (!metadata.is_empty()).then(|| Value::Object(metadata.clone()).to_string()),
            ..About::default()
        };
        if !self
            .chat
            .create_empty(&key, owner.as_ref(), &about, call.deadline)
            .await?
        {
            // 128 random bits: taken only if the same id was minted twice.
            return Err(ChatError::Busy(1).into());
        }
        if !runs.is_empty() {
            self.chat
                .append_runs(&key, owner.as_ref(), runs, call.deadline)
                .await?;
        }
        log_read(call, "conversation created");
        self.conversation_read(call, id, &key).await
    }

    pub(super) async fn get_conversation(
        &self,
        call: &Call<'_>,
        segment: &str,
    ) -> Result<Value, ApiError> {
        let (id, key) = self.conversation_of(call, segment)?;
        let conversation = self.conversation_read(call, id, &key).await?;
        log_read(call, "conversation read");
        Ok(conversation)
    }

    /// `POST /v1/conversations/{id}`: `{"metadata": {...}}` replaces its metadata.
    pub(super) async fn update_conversation(
        &self,
        call: &Call<'_>,
        segment: &str,
    ) -> Result<Value, ApiError> {
        let (id, key) = self.conversation_of(call, segment)?;
        let fields = body_of(call, &["metadata"])?;
        if !fields.contains_key("metadata") {
            return Err(ApiError::Param {
                param: "metadata".into(),
                message: "metadata is required".into(),
            });
        }
        let metadata = Value::Object(parse_metadata(fields.get("metadata"))?).to_string();
        if !self
            .chat
            .set_metadata(&key, &metadata, call.deadline)
            .await?
        {
            return Err(ApiError::ConversationNotFound(id.as_str().to_owned()));
        }
        log_read(call, "conversation updated");
        self.conversation_read(call, id, &key).await
    }

    pub(super) async fn delete_conversation(
        &self,
        call: &Call<'_>,
        segment: &str,
    ) -> Result<Value, ApiError> {
        let (id, key) = self.conversation_of(call, segment)?;
        if self.chat.forget(&key, call.deadline).await? == Deleted::NotFound {
            return Err(ApiError::ConversationNotFound(id.as_str().to_owned()));
        }
        log_read(call, "conversation deleted");
        Ok(
            serde_json::json!({"id": id.as_str(), "object": "conversation.deleted", "deleted": true}),
        )
    }

    /// `GET /v1/conversations/{id}/items?limit=&order=asc|desc&after=<item id>`.
    pub(super) async fn list_items(
        &self,
        call: &Call<'_>,
        segment: &str,
    ) -> Result<Value, ApiError> {
        let (id, key) = self.conversation_of(call, segment)?;
        let limit = parse_limit(call.param("limit"), DEFAULT_ITEMS, MAX_ITEMS).map_err(|_| {
            ApiError::Param {
                param: "limit".into(),
                message: format!("limit must be a whole number from 1 to {MAX_ITEMS}"),
            }
        })?;
        let ascending = match call.param("order") {
            None | Some("desc") => false,
            Some("asc") => true,
            Some(_) => {
                return Err(ApiError::Param {
                    param: "order".into(),
                    message: "order must be asc or desc".into(),
                })
            }
        };
        let after = call.param("after");
        let mut items = Vec::new();
        let mut passed = after.is_none();
        let mut cursor = None;
        let page_limit = PageLimit {
            runs: crate::http::MAX_HISTORY_LIMIT,
            bytes: HISTORY_PAGE_BYTES,
        };
        let has_more = loop {
            let span = match ascending {
                true => Span::From(cursor.as_ref()),
                false => Span::Before(cursor.as_ref()),
            };
            let Some(page) = self
                .chat
                .history(&key, span, page_limit, call.deadline)
                .await?
            else {
                return Err(ApiError::ConversationNotFound(id.as_str().to_owned()));
            };
            let mut halves = Vec::with_capacity(page.runs.len() * 2);
            for run in &page.runs {
                halves.push(message_item(
                    &run.id,
                    Half::Input,
                    &run.input,
                    Status::Completed,
                ));
                halves.push(message_item(
                    &run.id,
                    Half::Output,
                    &run.output,
                    Status::Completed,
                ));
            }
            if !ascending {
                halves.reverse();
            }
            for item in halves {
                if !passed {
                    passed = item.get("id").and_then(Value::as_str) == after;
                    continue;
                }
                items.push(item);
            }
            if items.len() > limit {
                break true;
            }
            cursor = match ascending {
                true => page.next,
                false => page.prev,
            };
            if cursor.is_none() {
                break false;
            }
        };
        if !passed {
            return Err(ApiError::Param {
                param: "after".into(),
                message: "after names no item of this conversation".into(),
            });
        }
        items.truncate(limit);
        log_read(call, "conversation items read");
        Ok(object::list(items, has_more))
    }

    /// `POST /v1/conversations/{id}/items`: `{"items": [user, assistant, ...]}`, each user
    /// message with the reply after it, stored as runs without asking the model.
    pub(super) async fn add_items(
        &self,
        call: &Call<'_>,
        segment: &str,
    ) -> Result<Value, ApiError> {
        let (id, key) = self.conversation_of(call, segment)?;
        let fields = body_of(call, &["items"])?;
        let runs = self.pairs(fields.get("items"))?;
        // Items go into a conversation that exists (a response may start one; this may not).
        if self.chat.about(&key, call.deadline).await?.is_none() {
            return Err(ApiError::ConversationNotFound(id.as_str().to_owned()));
        }
        if runs.is_empty() {
            return Err(ApiError::Param {
                param: "items".into(),
                message: "items is required".into(),
            });
        }
        let texts: Vec<(String, String)> = runs
            .iter()
            .map(|(m, o)| (m.as_str().to_owned(), o.clone()))
            .collect();
        let owner = self.owner(call.request, None)?;
        let ids = self
            .chat
            .append_runs(&key, owner.as_ref(), runs, call.deadline)
            .await?;
        let mut items = Vec::with_capacity(ids.len() * 2);
        for (run, (input, output)) in ids.iter().zip(&texts) {
            items.push(message_item(run, Half::Input, input, Status::Completed));
            items.push(message_item(run, Half::Output, output, Status::Completed));
        }
        log_read(call, "conversation items added");
        Ok(object::list(items, false))
    }

    pub(super) async fn get_item(
        &self,
        call: &Call<'_>,
        segment: &str,
        item: &str,
    ) -> Result<Value, ApiError> {
        let (_, key) = self.conversation_of(call, segment)?;
        let raw = percent_decode(item).ok_or(ApiError::BadPath)?;
        let (run, half) = parse_item_id(&raw).ok_or_else(|| ApiError::ItemNotFound(raw.clone()))?;
        let found = self
            .chat
            .find_run(&key, run.as_str(), call.deadline)
            .await?
            .ok_or_else(|| ApiError::ItemNotFound(raw.clone()))?;
        let text = match half {
            Half::Input => &found.run.input,
            Half::Output => &found.run.output,
        };
        log_read(call, "conversation item read");
        Ok(message_item(run.as_str(), half, text, Status::Completed))
    }

    /// `DELETE /v1/conversations/{id}/items/{item}`: the run goes, both its halves.
    pub(super) async fn delete_item(
        &self,
        call: &Call<'_>,
        segment: &str,
        item: &str,
    ) -> Result<Value, ApiError> {
        let (id, key) = self.conversation_of(call, segment)?;
        let raw = percent_decode(item).ok_or(ApiError::BadPath)?;
        let (run, _) = parse_item_id(&raw).ok_or_else(|| ApiError::ItemNotFound(raw.clone()))?;
        match self
            .chat
            .delete_run(&key, run.as_str(), call.deadline)
            .await
        {
            Ok(()) => {}
            Err(ChatError::RunNotFound) => return Err(ApiError::ItemNotFound(raw)),
            Err(e) => return Err(e.into()),
        }
        log_read(call, "conversation item deleted");
        self.conversation_read(call, id, &key).await
    }

    /// Items as runs: each user message followed by the assistant's reply.
    fn pairs(&self, items: Option<&Value>) -> Result<Vec<(Message, String)>, ApiError> {
        let items = match items {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(items)) => items,
            Some(_) => {
                return Err(ApiError::Param {
                    param: "items".into(),
                    message: "items must be an array".into(),
                })
            }
        };
        if items.len() > MAX_ADDED_ITEMS {
            return Err(ApiError::Param {
                param: "items".into(),
                message: format!("at most {MAX_ADDED_ITEMS} items at once"),
            });
        }
        let role_text = |item: &Value| -> Result<(String, String), ApiError> {
            let kind = item.get("type").and_then(Value::as_str);
            if !matches!(kind, None | Some("message")) {
                return Err(ApiError::Unsupported {
                    param: "items".into(),
                    message: "a conversation's items are messages here".into(),
                });
            }
            let role = item.get("role").and_then(Value::as_str).unwrap_or_default();
            Ok((role.to_owned(), message_text(item.get("content"))?))
        };
        let mut runs = Vec::new();
        let mut it = items.iter();
        while let Some(first) = it.next() {
            let (role, input) = role_text(first)?;
            let reply = match it.next().map(role_text).transpose()? {
                Some((r, output)) if role == "user" && r == "assistant" => output,
                _ => {
                    return Err(ApiError::Unsupported {
                        param: "items".into(),
                        message: "items are stored as runs: give each user message with the assistant's reply after it"
                            .into(),
                    })
                }
            };
            if reply.trim().is_empty() {
                return Err(ApiError::Param {
                    param: "items".into(),
                    message: "an assistant message is empty".into(),
                });
            }
            runs.push((
                Message::parse(&input, self.settings.max_message_bytes)?,
                reply,
            ));
        }
        Ok(runs)
    }
}
