//! Counts tokens the way OpenAI's o200k_base encoding does (gpt-4o, gpt-4.1, o-series), offline:
//! the encoding's ranks are bundled in tiktoken-rs.
//!
//! Reads one JSON string per line on stdin (`"Hello"`, `"a\nb"`) and writes one line per input
//! line: the string's token count, flushed at once so a caller can ask line by line over a pipe.
//! Text that looks like a special token (`<|endoftext|>`) is counted as ordinary text, as a
//! provider counts it in a message's content. A line that is not a JSON string gets `-1` (and a
//! note on stderr), so the answers stay in step with the questions. Ends at the end of stdin.

use std::io::{self, BufRead, Write};

fn main() -> io::Result<()> {
    let bpe = tiktoken_rs::o200k_base_singleton();
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut out = stdout.lock();
    for line in stdin.lock().lines() {
        let line = line?;
        let count = match serde_json::from_str::<String>(&line) {
            Ok(text) => bpe.count_ordinary(&text) as i64,
            Err(e) => {
                eprintln!("tokencount: not a JSON string: {e}");
                -1
            }
        };
        writeln!(out, "{count}")?;
        out.flush()?;
    }
    Ok(())
}
