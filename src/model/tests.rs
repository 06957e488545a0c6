//! The wire formats: completions, streamed answers split anywhere, messages.

use super::*;

fn read_stream(chunks: &[&[u8]]) -> (Vec<String>, Result<Completion, ModelError>) {
    let mut parser = SseParser::default();
    let mut answer = StreamedAnswer::default();
    let mut pieces = Vec::new();
    let mut events = Vec::new();
    for chunk in chunks {
        events.extend(parser.push(chunk));
    }
    events.extend(parser.finish());
    for data in events {
        match answer.take(&data) {
            Ok(piece) => pieces.extend(piece),
            Err(e) => return (pieces, Err(e)),
        }
        if answer.done {
            break;
        }
    }
    (pieces, answer.completion())
}

const CHUNKS: &str = concat!(
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}],\"usage\":null}\n\n",
    ": keep-alive\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \"},\"finish_reason\":null}]}\r\n\r\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Coll\\u00efn!\"},\"finish_reason\":null}]}\n\n",
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn reads_a_streamed_answer_split_anywhere() {
    let bytes = CHUNKS.as_bytes();
    for split in [1, 7, 64, bytes.len()] {
        let chunks: Vec<&[u8]> = bytes.chunks(split).collect();
        let (pieces, completion) = read_stream(&chunks);
        let completion = completion.unwrap();
        assert_eq!(pieces.concat(), "Hello Coll\u{ef}n!", "split every {split}");
        assert_eq!(completion.text, pieces.concat());
        assert!(!completion.truncated);
        assert_eq!(completion.usage.unwrap().prompt_tokens, 12);
    }
}

#[test]
fn unfinished_or_failing_streams_are_errors() {
    let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
    let (pieces, result) = read_stream(&[cut.as_bytes()]);
    assert_eq!(pieces, ["Hel"]);
    assert!(
        matches!(result, Err(ModelError::Interrupted(_))),
        "{result:?}"
    );

    let done_early = format!("{cut}data: [DONE]\n\n");
    let (_, result) = read_stream(&[done_early.as_bytes()]);
    assert!(
        matches!(result, Err(ModelError::Interrupted(_))),
        "{result:?}"
    );

    let error = format!("{cut}data: {{\"error\":{{\"message\":\"overloaded\"}}}}\n\n");
    let (_, result) = read_stream(&[error.as_bytes()]);
    assert!(
        matches!(&result, Err(ModelError::Interrupted(m)) if m.contains("overloaded")),
        "{result:?}"
    );

    let garbage = "data: <html>\n\n";
    let (_, result) = read_stream(&[garbage.as_bytes()]);
    assert!(matches!(result, Err(ModelError::Invalid(_))), "{result:?}");

    let blank =
        "data: {\"choices\":[{\"delta\":{\"content\":\" \"},\"finish_reason\":\"stop\"}]}\n\n";
    let (_, result) = read_stream(&[blank.as_bytes()]);
    assert!(matches!(result, Err(ModelError::Empty)), "{result:?}");

    // The last event may lack its blank line; a cut-off answer is kept but flagged.
    let length =
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hi th\"},\"finish_reason\":\"length\"}]}";
    let (_, result) = read_stream(&[length.as_bytes()]);
    assert!(result.unwrap().truncated);
}

#[test]
fn multi_line_data_is_joined() {
    let mut parser = SseParser::default();
    assert_eq!(
        parser.push(b"event: x\ndata: a\ndata:b\nid: 1\n\n"),
        ["a\nb"]
    );
    assert!(parser.push(b"data: c").is_empty());
    assert_eq!(parser.finish(), ["c"]);
}

#[test]
fn reads_a_completion() {
    let c = parse_completion(
        br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#,
    )
    .unwrap();
    assert_eq!(c.text, "Hi");
    assert!(!c.truncated);
    assert_eq!(c.usage.unwrap().prompt_tokens, 9);
}

#[test]
fn cut_off_answers_are_kept_but_flagged() {
    let c = parse_completion(
        br#"{"choices":[{"message":{"content":"Hi th"},"finish_reason":"length"}]}"#,
    )
    .unwrap();
    assert!(c.truncated);
    assert_eq!(c.usage, None);
}

#[test]
fn unusable_answers_are_errors() {
    for body in [
        &b"<html>502</html>"[..],
        br#"{"choices":[]}"#,
        br#"{"error":{"message":"x"}}"#,
    ] {
        assert!(matches!(
            parse_completion(body),
            Err(ModelError::Invalid(_))
        ));
    }
    for body in [
        &br#"{"choices":[{"message":{"content":""}}]}"#[..],
        br#"{"choices":[{"message":{"content":"  \n"}}]}"#,
        br#"{"choices":[{"message":{"content":null}}]}"#,
        br#"{"choices":[{"message":null}]}"#,
    ] {
        assert!(matches!(parse_completion(body), Err(ModelError::Empty)));
    }
}

#[test]
fn messages_serialize_as_openai_expects() {
    let json = serde_json::to_string(&ChatMessage::new(Role::Assistant, "x")).unwrap();
    assert_eq!(json, r#"{"role":"assistant","content":"x"}"#);
}

#[test]
fn cached_tokens_are_read_from_the_usage() {
    let c = parse_completion(
        br#"{"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 2048, "completion_tokens": 1,
                       "prompt_tokens_details": {"cached_tokens": 1024}}}"#,
    )
    .unwrap();
    let usage = c.usage.unwrap();
    assert_eq!(
        (usage.prompt_tokens, usage.cached_tokens),
        (2048, Some(1024))
    );
    let plain = parse_completion(
        br#"{"choices": [{"message": {"content": "hi"}}], "usage": {"prompt_tokens": 3}}"#,
    )
    .unwrap();
    assert_eq!(plain.usage.unwrap().cached_tokens, None);
}
