//! session-chat: an LLM chat with a memory per session, kept in Amazon DynamoDB.
//!
//! The layers, from the edge inward (each depends only on those below it; ARCHITECTURE.md maps
//! them and follows one request through):
//! - [`lambda`]: the Lambda entry adapter (raw events in, API Gateway or streamed answers out);
//! - [`http`]: the HTTP adapter (routes, parsing, identity, the error table, the page);
//! - [`startup`], [`telemetry`]: wiring and logs, once per cold start;
//! - [`chat`]: the chat cycle (load, prompt, append, save);
//! - [`config`]: configuration, read once;
//! - [`model`]: model clients; [`store`]: the session store and its DynamoDB implementation;
//! - [`memory`]: the conversation memory and its stored JSON formats;
//! - [`input`]: typed request inputs; [`deadline`], [`error`], [`tls`]: the ground floor.

pub mod chat;
pub mod config;
pub mod deadline;
pub mod error;
pub mod http;
pub mod input;
pub mod lambda;
pub mod memory;
pub mod metrics;
pub mod model;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;

pub use startup::{
    api_key_from_secret, app_with_model, aws_defaults, build_app, build_app_with, build_chat,
    build_model, chat_with_model, InitError,
};
pub use telemetry::init_tracing;
