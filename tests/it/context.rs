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

/// A message of about 200 characters: with the echo, a run of about 110 tokens.
fn short_filler(i: usize) -> String {
    format!(
        "turn {i:03}: {}",
        "the quick brown fox jumps over it ".repeat(6)
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

/// docs/context.md, "Which reports count": a server reporting zero, a constant 10 or 100x the
/// truth as its prompt tokens moves nothing. Over a conversation long enough for the window to
/// fill and step many times, every prompt is the one sent with no report at all, and the
/// history the model received, as it counts it, stays within the bound the docs state for a
/// session never calibrated: 1.5 budgets. Honest counts (`counted`, the control) stay within it
/// too.
#[tokio::test]
async fn a_token_report_that_cannot_be_right_does_not_move_the_budget() {
    const BUDGET: u64 = 600;
    const TURNS: usize = 36;
    let mut unreported: Option<Vec<Value>> = None;
    for usage in ["missing", "zero", "constant:10", "factor:100", "counted"] {
        let env = TestEnv::with_model(&["--usage", usage]).await;
        let app = env
            .app_with(&[("HISTORY_TOKEN_BUDGET", &BUDGET.to_string())])
            .await;
        for i in 0..TURNS {
            let (status, body) = Req::chat("reports", &short_filler(i)).call_json(&app).await;
            assert_eq!(status, 200, "{usage}, turn {i}: {body}");
        }
        let prompts: Vec<Value> = env
            .model
            .requests()
            .await
            .into_iter()
            .filter(|r| !is_fold(r))
            .collect();
        assert_eq!(prompts.len(), TURNS);
        // Each prompt's history (its user and assistant messages before the new one) as the
        // scripted model counted it.
        let histories: Vec<u64> = prompts.iter().map(history_tokens).collect();
        let most = *histories.iter().max().unwrap();
        let full = histories.iter().filter(|&&h| h > BUDGET / 2).count();
        eprintln!(
            "--usage {usage}: history at most {most} tokens (bound {}), {full} of {TURNS} prompts over half the budget, scale {}",
            BUDGET * 3 / 2,
            stored_scale(&env).await
        );
        assert!(most <= BUDGET * 3 / 2, "{usage}: {most} tokens of history");
        assert!(most > BUDGET / 2, "{usage}: the window filled");
        let messages: Vec<Value> = prompts
            .iter()
            .map(|r| r["body"]["messages"].clone())
            .collect();
        let steps = messages
            .windows(2)
            .filter(|pair| pair[1].as_array().unwrap().len() <= pair[0].as_array().unwrap().len())
            .count();
        assert!(steps >= 3, "{usage}: the window stepped {steps} times");
        match &unreported {
            _ if usage == "counted" => {}
            None => unreported = Some(messages),
            Some(expected) => assert!(
                &messages == expected,
                "{usage}: the prompts differ from those with no report"
            ),
        }
    }
}

/// The tokens of a prompt's history as the scripted model counted them (framing included).
fn history_tokens(request: &Value) -> u64 {
    let messages = request["body"]["messages"].as_array().unwrap();
    let counts = request["message_tokens"].as_array().unwrap();
    messages[..messages.len() - 1]
        .iter()
        .zip(counts)
        .filter(|(m, _)| m["role"] != "system")
        .map(|(_, n)| n.as_u64().unwrap())
        .sum()
}

/// The session's stored calibration, `token_scale` (thousandths), or "none".
async fn stored_scale(env: &TestEnv) -> String {
    let item = env.item("reports").await.expect("the session item");
    item.get("token_scale")
        .and_then(|v| v.as_n().ok())
        .map_or_else(|| "none".to_owned(), Clone::clone)
}
