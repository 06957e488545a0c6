//! iofloor: the bare I/O of a chat turn, with nothing around it, timed turn by turn.
//!
//!     iofloor SESSION_ID MESSAGES_FILE     (one message a line)
//!
//! Per message: a consistent GetItem of the session, one POST to the model's chat-completions
//! endpoint carrying the newest stored runs that fit HISTORY_TOKEN_BUDGET (4 characters a token,
//! as session-chat estimates), and a PutItem of the grown memory conditional on the version read.
//! Reads TABLE_NAME, OPENAI_BASE_URL, MODEL_ID, HISTORY_TOKEN_BUDGET and the AWS settings the
//! SDK's way. Prints `{"turn_ms": [...]}`, one duration per message, the first one included.

use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn env(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4) + 4
}

/// The chat messages: the newest runs within `budget`, oldest first, then the new message.
fn prompt(runs: &[Value], message: &str, budget: usize) -> Vec<Value> {
    let text = |run: &Value, key: &str| run[key].as_str().unwrap_or_default().to_owned();
    let mut spent = 0;
    let fitting = runs
        .iter()
        .rev()
        .take_while(|run| {
            spent += tokens(&text(run, "input")) + tokens(&text(run, "output"));
            spent <= budget
        })
        .count();
    let mut messages = Vec::new();
    for run in &runs[runs.len() - fitting..] {
        messages.push(json!({"role": "user", "content": text(run, "input")}));
        messages.push(json!({"role": "assistant", "content": text(run, "output")}));
    }
    messages.push(json!({"role": "user", "content": message}));
    messages
}

struct Floor {
    db: aws_sdk_dynamodb::Client,
    http: reqwest::Client,
    table: String,
    url: String,
    model: String,
    budget: usize,
}

async fn turn(f: &Floor, session: &str, message: &str) -> Result<(), Error> {
    let (db, table) = (&f.db, &f.table);
    let key = AttributeValue::S(session.to_owned());

    let item = db
        .get_item()
        .table_name(table)
        .key("id", key.clone())
        .consistent_read(true)
        .send()
        .await?
        .item
        .unwrap_or_default();
    let version: u64 = match item.get("version") {
        Some(AttributeValue::N(n)) => n.parse()?,
        _ => 0,
    };
    let mut memory: Value = match item.get("value") {
        Some(AttributeValue::S(s)) => serde_json::from_str(s)?,
        _ => json!({"type": "ConversationMemory", "runs": [], "max_runs": null}),
    };

    let runs = memory["runs"].as_array().cloned().unwrap_or_default();
    let body = json!({"model": f.model, "messages": prompt(&runs, message, f.budget)});
    let answer: Value = f.http.post(&f.url).json(&body).send().await?.error_for_status()?.json().await?;
    let reply = answer["choices"][0]["message"]["content"].as_str().unwrap_or_default();

    memory["runs"]
        .as_array_mut()
        .ok_or("stored runs are not a list")?
        .push(json!({"type": "Run", "id": format!("{:032x}", version + 1),
                     "input": message, "output": reply}));
    let put = db
        .put_item()
        .table_name(table)
        .item("id", key)
        .item("value", AttributeValue::S(memory.to_string()))
        .item("version", AttributeValue::N((version + 1).to_string()));
    let put = if version == 0 {
        put.condition_expression("attribute_not_exists(id)")
    } else {
        put.condition_expression("version = :read")
            .expression_attribute_values(":read", AttributeValue::N(version.to_string()))
    };
    put.send().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let [_, session, file] = args.as_slice() else {
        return Err("usage: iofloor SESSION_ID MESSAGES_FILE".into());
    };
    let messages = std::fs::read_to_string(file)?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest()).load().await;
    let floor = Floor {
        db: aws_sdk_dynamodb::Client::new(&sdk),
        http: reqwest::Client::new(),
        table: env("TABLE_NAME", "sessions"),
        url: format!("{}/chat/completions", env("OPENAI_BASE_URL", "").trim_end_matches('/')),
        model: env("MODEL_ID", "gpt-4.1-mini"),
        budget: env("HISTORY_TOKEN_BUDGET", "8000").parse()?,
    };

    let mut turn_ms = Vec::new();
    for message in messages.lines().filter(|m| !m.is_empty()) {
        let started = Instant::now();
        turn(&floor, session, message).await?;
        turn_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    println!("{}", json!({ "turn_ms": turn_ms }));
    Ok(())
}
