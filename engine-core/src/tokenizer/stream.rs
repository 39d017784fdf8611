//! Incremental detokenization: tokens arrive one at a time and may end in the middle of a UTF-8
//! character (byte-level and byte-fallback vocabularies split rare characters into bytes).

use super::Tokenizer;

/// Turns a stream of token ids into text, emitting only whole characters.
///
/// Bytes that start a character whose remaining bytes have not arrived yet are held back; bytes
/// that can never become part of a valid character are emitted as U+FFFD at once, so the stream
/// never stalls. By default control tokens render as nothing (see [`StreamDecoder::with_special`]).
#[derive(Clone, Debug)]
pub struct StreamDecoder {
    pending: Vec<u8>,
    render_special: bool,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        StreamDecoder::new()
    }
}

impl StreamDecoder {
    /// A decoder that skips control tokens.
    pub fn new() -> StreamDecoder {
        StreamDecoder {
            pending: Vec::new(),
            render_special: false,
        }
    }

    /// A decoder that renders control tokens as their text when `render_special` is true.
    pub fn with_special(render_special: bool) -> StreamDecoder {
        StreamDecoder {
            pending: Vec::new(),
            render_special,
        }
    }

    /// Adds one token and returns the text that is now complete (possibly empty). Unknown ids
    /// add nothing.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        if let Some(bytes) = tok.render_bytes(id, !self.render_special) {
            self.pending.extend_from_slice(bytes);
        }
        self.drain(false)
    }

    /// Returns whatever is still held back, with incomplete sequences as U+FFFD, and resets.
    pub fn finish(&mut self) -> String {
        self.drain(true)
    }

    /// Whether bytes are held back waiting for the rest of a character.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn drain(&mut self, flush: bool) -> String {
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    // `valid` is valid UTF-8 by construction.
                    out.push_str(&String::from_utf8_lossy(valid));
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &after[n..];
                        }
                        None if flush => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &[];
                            break;
                        }
                        None => {
                            rest = after;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.len();
        let len = self.pending.len();
        self.pending.drain(..len - keep);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<String>, String) {
        let mut d = StreamDecoder::new();
        let mut outs = Vec::new();
        for c in chunks {
            d.pending.extend_from_slice(c);
            outs.push(d.drain(false));
        }
        (outs, d.finish())
    }

    #[test]
    fn holds_partial_characters() {
        let euro = "€".as_bytes();
        let (outs, tail) = run(&[b"a", &euro[..1], &euro[1..2], &euro[2..], b"b"]);
        assert_eq!(outs, ["a", "", "", "€", "b"]);
        assert_eq!(tail, "");
    }

    #[test]
    fn invalid_bytes_do_not_stall() {
        let (outs, tail) = run(&[b"\xff", b"x\x80y", b"\xe2\x82"]);
        assert_eq!(outs, ["\u{fffd}", "x\u{fffd}y", ""]);
        assert_eq!(tail, "\u{fffd}");
        // A lead byte followed by a non-continuation byte is replaced as soon as that byte comes.
        let (outs, tail) = run(&[b"\xe2", b"a"]);
        assert_eq!(outs, ["", "\u{fffd}a"]);
        assert_eq!(tail, "");
    }
}
