//! Integration tests: one binary. Each test gets its own table on a shared local DynamoDB-compatible
//! server (moto) and its own scripted model server, and drives the handler with the events in
//! `events/`.

mod support;

mod context;
mod conversations;
mod errors;
mod events;
mod griptape;
mod log_layout;
mod managed;
mod production;
mod quota;
mod real_model;
mod reliability;
mod responses;
mod sessions;
mod storage;
mod streaming;
mod versions;
mod walkthrough;
mod watch;
