//! OpenAI-style stop strings over streamed text, including matches that span pushes.

/// The result of one [`StopMatcher::push`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StopStep {
    /// Text that is now safe to show the client.
    pub emit: String,
    /// A stop string matched: generation should end. `emit` holds the text before it; the stop
    /// string itself is never emitted.
    pub stopped: bool,
}

/// Finds the first occurrence of any stop string in streamed text.
///
/// Text that might be the start of a stop string is held back until it is known not to be; after
/// a match, the stop string and anything after it are dropped. Generation stops as soon as a stop
/// string is complete: the first one to end in the text wins (then the one that starts first), so
/// the result does not depend on how the text is split into pushes. Works on `&str`, so it never
/// splits a character. Empty stop strings are ignored.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    matched: Option<usize>,
}

impl StopMatcher {
    /// A matcher for `stops` (OpenAI allows up to 4; any number works). Empty strings are ignored.
    pub fn new(mut stops: Vec<String>) -> StopMatcher {
        stops.retain(|s| !s.is_empty());
        StopMatcher {
            stops,
            held: String::new(),
            matched: None,
        }
    }

    /// Whether a stop string has matched.
    pub fn is_stopped(&self) -> bool {
        self.matched.is_some()
    }

    /// The stop string that matched, if any.
    pub fn matched_stop(&self) -> Option<&str> {
        self.matched
            .and_then(|i| self.stops.get(i))
            .map(String::as_str)
    }

    /// Adds newly generated text. Returns the text safe to show now and whether a stop string
    /// matched; after a match, further pushes emit nothing.
    pub fn push(&mut self, text: &str) -> StopStep {
        if self.is_stopped() {
            return StopStep {
                emit: String::new(),
                stopped: true,
            };
        }
        self.held.push_str(text);
        // A match that ends in the new text starts inside the held text: everything before it was
        // released because no suffix there could begin a stop string. The first stop string to be
        // completed wins (then the one starting first), as if the text came one character at a
        // time.
        let first = self
            .stops
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                self.held
                    .find(s.as_str())
                    .map(|pos| (pos + s.len(), pos, i))
            })
            .min();
        if let Some((_, pos, i)) = first {
            self.matched = Some(i);
            self.held.truncate(pos);
            return StopStep {
                emit: std::mem::take(&mut self.held),
                stopped: true,
            };
        }
        let keep = self.partial_suffix_len();
        let tail = self.held.split_off(self.held.len() - keep);
        StopStep {
            emit: std::mem::replace(&mut self.held, tail),
            stopped: false,
        }
    }

    /// Ends the stream (EOS or length limit): returns the held-back text, or nothing after a
    /// match.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest suffix of the held text that is a proper prefix of some
    /// stop string.
    fn partial_suffix_len(&self) -> usize {
        self.stops
            .iter()
            .filter_map(|s| {
                (1..s.len().min(self.held.len() + 1))
                    .rev()
                    .find(|&k| s.is_char_boundary(k) && self.held.ends_with(&s[..k]))
            })
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool, String) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut emits = Vec::new();
        let mut stopped = false;
        for p in pieces {
            let step = m.push(p);
            emits.push(step.emit);
            stopped |= step.stopped;
        }
        (emits, stopped, m.finish())
    }

    #[test]
    fn overlapping_self_prefix() {
        let (emits, stopped, rest) = run(&["aab"], &["a", "a", "a", "b"]);
        assert_eq!(emits, vec!["", "", "a", ""]);
        assert!(stopped);
        assert_eq!(rest, "");
    }

    #[test]
    fn held_text_is_released_when_it_stops_looking_like_a_stop() {
        let (emits, stopped, rest) = run(&["</s>"], &["a<", "/x", "y<"]);
        assert_eq!(emits, vec!["a", "</x", "y"]);
        assert!(!stopped);
        assert_eq!(rest, "<");
    }

    #[test]
    fn pushes_after_a_match_emit_nothing() {
        let mut m = StopMatcher::new(vec!["x".into()]);
        assert_eq!(
            m.push("abxcd"),
            StopStep {
                emit: "ab".into(),
                stopped: true
            }
        );
        assert_eq!(m.matched_stop(), Some("x"));
        assert_eq!(
            m.push("more"),
            StopStep {
                emit: String::new(),
                stopped: true
            }
        );
        assert_eq!(m.finish(), "");
    }
}
