//! Server-sent events, parsed incrementally.

/// Server-sent events read as they arrive: the `data` of each event once it is complete (a blank
/// line ends it). Other fields and comments are skipped; lines may end in LF or CRLF.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    /// Takes the next bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        for &b in bytes {
            if b == b'\n' {
                let line = std::mem::take(&mut self.line);
                self.end_line(line, &mut events);
            } else {
                self.line.push(b);
            }
        }
        events
    }

    /// The stream ended: an event left without its blank line still counts.
    pub fn finish(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.end_line(line, &mut events);
        }
        events.extend(self.data.take());
        events
    }

    fn end_line(&mut self, mut line: Vec<u8>, events: &mut Vec<String>) {
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.is_empty() {
            events.extend(self.data.take());
            return;
        }
        // Split at a line end, a line holds whole characters; invalid UTF-8 is replaced.
        let line = String::from_utf8_lossy(&line);
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (&*line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
    }
}
