//! What the model is told over a long conversation (docs/context.md), as the scripted model
//! received it over HTTP: prompts that keep their prefix between the window's steps, one fold a
//! step, and the first turn's name still known at the end.

use serde_json::Value;

use crate::support::{Req, TestEnv};

/// A message of about 600 characters: with the scripted model's echo, a turn of 1,200.
fn filler(i: usize) -> String {
    format!(
        "turn {i:03}: {}",
        "the quick brown fox jumps over it ".repeat(17)
    )
}

fn is_fold(request: &Value) -> bool {
    request["body"]["messages"][0]["content"]
        .as_str()
        .is_some_and(|c| c.contains("running summary"))
}

#[tokio::test]
async fn a_long_conversation_keeps_its_prefix_between_steps_and_its_first_name() {
    const TURNS: usize = 120;
    let env = TestEnv::new().await;
    // The default settings: an 8,000-token budget, summaries on.
    let app = env.app().await;
    let first = "Hello my name is Collin.".to_owned();
    let last = "What is my name?".to_owned();
    for i in 0..TURNS {
        let message = match i {
            0 => first.clone(),
            i if i == TURNS - 1 => last.clone(),
            i => filler(i),
        };
        let (status, body) = Req::chat("long", &message).call_json(&app).await;
        assert_eq!(status, 200, "turn {i}: {body}");
        if i == TURNS - 1 {
            assert_eq!(
                body["reply"], "Your name is Collin.",
                "remembered by the summary"
            );
        }
    }
    let requests = env.model.requests().await;
    let folds = requests.iter().filter(|r| is_fold(r)).count();
    let prompts: Vec<&Vec<Value>> = requests
        .iter()
        .filter(|r| !is_fold(r))
        .map(|r| r["body"]["messages"].as_array().unwrap())
        .collect();
    assert_eq!(prompts.len(), TURNS);
    // Between steps each prompt is the one before, byte for byte, plus the reply and the new
    // message; at a step the prefix breaks once.
    let breaks = prompts
        .windows(2)
        .filter(|pair| {
            let (before, after) = (pair[0], pair[1]);
            !(after.len() == before.len() + 2 && after[..before.len()] == before[..])
        })
        .count();
    eprintln!("{TURNS} turns: {breaks} prefix breaks, {folds} folds");
    assert!(breaks >= 3, "the window stepped: {breaks}");
    assert!(
        breaks <= TURNS / 5,
        "the window moves in steps, not every turn: {breaks}"
    );
    assert!(
        folds <= breaks + 1,
        "one fold a step: {folds} folds, {breaks} steps"
    );
    let calls = (TURNS + folds) as f64 / TURNS as f64;
    assert!(calls <= 1.1, "{calls:.2} model calls a turn");
    // One cache key for the session, never its id.
    let keys: Vec<&Value> = requests
        .iter()
        .filter(|r| !is_fold(r))
        .map(|r| &r["body"]["prompt_cache_key"])
        .collect();
    assert!(
        keys.iter().all(|k| *k == keys[0] && k.is_string()),
        "{:?}",
        keys[0]
    );
    assert!(!keys[0].as_str().unwrap().contains("long"));
}
