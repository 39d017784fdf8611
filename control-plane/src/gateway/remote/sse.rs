//! An incremental parser of server-sent events: bytes in, `data` payloads out (events without
//! data, comments, `event:` and `id:` lines are skipped; `\n`, `\r\n` line ends both work).

/// Parses an SSE byte stream as it arrives.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    /// Feeds bytes; pushes the `data` of every event they complete.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        for &b in bytes {
            if b == b'\n' {
                let mut line = std::mem::take(&mut self.line);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                self.line_done(&line, out);
                self.line = line;
                self.line.clear();
            } else {
                self.line.push(b);
            }
        }
    }

    /// Ends the stream: the last event, if it was not closed by a blank line.
    pub fn finish(&mut self, out: &mut Vec<Vec<u8>>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        self.dispatch(out);
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Vec<u8>>) {
        if line.is_empty() {
            self.dispatch(out);
        } else if let Some(rest) = line.strip_prefix(b"data:") {
            let rest = rest.strip_prefix(b" ").unwrap_or(rest);
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(rest);
            self.has_data = true;
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Vec<u8>>) {
        if self.has_data {
            out.push(std::mem::take(&mut self.data));
            self.has_data = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let text = b": comment\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
        let mut whole = Vec::new();
        let mut p = SseParser::default();
        p.feed(text, &mut whole);
        p.finish(&mut whole);
        assert_eq!(
            whole,
            vec![
                b"{\"a\":1}".to_vec(),
                b"line1\nline2".to_vec(),
                b"[DONE]".to_vec()
            ]
        );
        for split in 0..text.len() {
            let mut got = Vec::new();
            let mut p = SseParser::default();
            p.feed(&text[..split], &mut got);
            p.feed(&text[split..], &mut got);
            p.finish(&mut got);
            assert_eq!(got, whole, "split at {split}");
        }
        let mut got = Vec::new();
        let mut p = SseParser::default();
        p.feed(b"data: tail-without-blank-line", &mut got);
        p.finish(&mut got);
        assert_eq!(got, vec![b"tail-without-blank-line".to_vec()]);
    }
}
