//! Incremental sentence splitting for `sentence` events, so TTS can speak sentence by sentence.
//!
//! A sentence ends at `.`, `!`, `?` or `…` (a run of them, plus closing quotes or brackets)
//! followed by whitespace, or at the CJK `。`, `！`, `？` whatever follows. A `.` does not end a
//! sentence inside a number (`3.5`), after a common abbreviation (`Mr.`, `Dr.`, `e.g.`), after a
//! dotted abbreviation (`U.S.`, `a.m.`) or after a single capital initial (`J. Smith`). The
//! whitespace after a sentence belongs to it, so the sentences concatenate exactly to the text.

/// Words after which a `.` is not a sentence end (compared lower-case, without the dot).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "cf", "approx", "dept",
];

/// Splits streamed text into sentences of at least `min_chars` characters (shorter ones are
/// merged with the next); the remainder comes from [`SentenceSplitter::finish`].
#[derive(Debug, Clone, Default)]
pub struct SentenceSplitter {
    /// Text not yet emitted.
    buf: String,
    /// Byte offset in `buf` from which boundaries are still to be examined.
    scan: usize,
    /// Minimum sentence length in characters.
    min_chars: usize,
}

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…') || is_cjk_terminator(c)
}

fn is_cjk_terminator(c: char) -> bool {
    matches!(c, '。' | '！' | '？' | '｡')
}

fn is_closer(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '”' | '’' | ')' | ']' | '}' | '»' | '」' | '』' | '）' | '】'
    )
}

/// True when the word before a single `.` makes it an abbreviation, not a sentence end.
fn is_abbreviation(word: &str) -> bool {
    let word = word.trim_start_matches(|c: char| !c.is_alphanumeric());
    let mut chars = word.chars();
    match (chars.next(), chars.next()) {
        (None, _) => false,
        // A single capital letter: an initial ("J. Smith").
        (Some(c), None) => c.is_uppercase(),
        _ => {
            // Dotted abbreviations ("e.g", "U.S", "a.m") or a known short form.
            word.contains('.') || ABBREVIATIONS.contains(&word.to_lowercase().as_str())
        }
    }
}

/// Where the scan of `buf` from `from` stopped.
enum Scan {
    /// A sentence ends at this byte offset.
    Boundary(usize),
    /// No boundary can be decided without more text; resume at this offset.
    NeedMore(usize),
}

impl SentenceSplitter {
    /// A splitter emitting sentences of at least `min_chars` characters (0: every sentence).
    pub fn new(min_chars: usize) -> Self {
        Self {
            min_chars,
            ..Self::default()
        }
    }

    /// Add streamed text; returns the sentences it completed, in order.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        loop {
            match self.next_boundary(self.scan) {
                Scan::NeedMore(at) => {
                    self.scan = at;
                    return out;
                }
                Scan::Boundary(end) => {
                    if self.buf[..end].chars().count() >= self.min_chars {
                        out.push(self.buf.drain(..end).collect());
                        self.scan = 0;
                    } else {
                        // Too short: merge with the next sentence.
                        self.scan = end;
                    }
                }
            }
        }
    }

    /// The text not yet emitted (the last sentence, whatever its length), if any.
    pub fn finish(&mut self) -> Option<String> {
        self.scan = 0;
        if self.buf.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.buf))
        }
    }

    /// The first sentence end at or after `from` (whitespace after it included).
    fn next_boundary(&self, from: usize) -> Scan {
        let buf = &self.buf;
        let mut pos = from;
        while let Some(offset) = buf[pos..].find(is_terminator) {
            let start = pos + offset;
            // The run of terminators and closing marks, and the character after it.
            let mut cjk = false;
            let mut dots = 0;
            let mut others = 0;
            let mut run_end = start;
            let mut after = None;
            for c in buf[start..].chars() {
                if is_terminator(c) || is_closer(c) {
                    cjk |= is_cjk_terminator(c);
                    match c {
                        '.' => dots += 1,
                        c if is_terminator(c) => others += 1,
                        _ => {}
                    }
                    run_end += c.len_utf8();
                } else {
                    after = Some(c);
                    break;
                }
            }
            let Some(after) = after else {
                return Scan::NeedMore(start);
            };
            let ends = if cjk {
                true
            } else if !after.is_whitespace() {
                false // "3.5", "example.com", "e.g" inside a word
            } else if dots == 1 && others == 0 {
                let word_start = buf[..start]
                    .char_indices()
                    .rev()
                    .find(|(_, c)| c.is_whitespace() || is_cjk_terminator(*c))
                    .map_or(0, |(i, c)| i + c.len_utf8());
                !is_abbreviation(&buf[word_start..start])
            } else {
                true
            };
            if !ends {
                pos = run_end;
                continue;
            }
            // The whitespace after the sentence belongs to it; its end must be known.
            return match buf[run_end..].find(|c: char| !c.is_whitespace()) {
                Some(i) => Scan::Boundary(run_end + i),
                None => Scan::NeedMore(start),
            };
        }
        Scan::NeedMore(buf.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_whole(text: &str, min: usize) -> Vec<String> {
        let mut s = SentenceSplitter::new(min);
        let mut out = s.push(text);
        out.extend(s.finish());
        out
    }

    /// Feeds `text` in pieces of `step` characters.
    fn split_streamed(text: &str, min: usize, step: usize) -> Vec<String> {
        let mut s = SentenceSplitter::new(min);
        let chars: Vec<char> = text.chars().collect();
        let mut out = Vec::new();
        for piece in chars.chunks(step) {
            out.extend(s.push(&piece.iter().collect::<String>()));
        }
        out.extend(s.finish());
        out
    }

    #[test]
    fn streamed_pieces_split_at_sentence_ends_only() {
        let mut s = SentenceSplitter::new(0);
        let mut out = s.push("Dr. Who paid $3.5 today. Then");
        out.extend(s.push(" he left!"));
        out.extend(s.finish());
        assert_eq!(out, ["Dr. Who paid $3.5 today. ", "Then he left!"]);
    }

    #[test]
    fn splits_on_end_punctuation_followed_by_space() {
        assert_eq!(
            split_whole("Hello there. How are you? Fine!  Great… ok", 0),
            ["Hello there. ", "How are you? ", "Fine!  ", "Great… ", "ok"]
        );
    }

    #[test]
    fn does_not_split_decimals_abbreviations_and_initials() {
        let text = "Pi is 3.14 roughly. Mr. Smith and Dr. Jones met e.g. in the U.S. today. \
                    J. R. R. Tolkien wrote it at 5 p.m. sharp. See example.com now.";
        assert_eq!(
            split_whole(text, 0),
            [
                "Pi is 3.14 roughly. ",
                "Mr. Smith and Dr. Jones met e.g. in the U.S. today. ",
                "J. R. R. Tolkien wrote it at 5 p.m. sharp. ",
                "See example.com now."
            ]
        );
    }

    #[test]
    fn closing_quotes_and_runs_stay_with_the_sentence() {
        assert_eq!(
            split_whole(r#"He said "stop." Then?! (Yes.) Done..."#, 0),
            [r#"He said "stop." "#, "Then?! ", "(Yes.) ", "Done..."]
        );
    }

    #[test]
    fn cjk_terminators_need_no_space() {
        assert_eq!(
            split_whole("你好。今天好吗？很好！", 0),
            ["你好。", "今天好吗？", "很好！"]
        );
        assert_eq!(split_whole("「はい。」次", 0), ["「はい。」", "次"]);
    }

    #[test]
    fn short_sentences_merge_with_the_next() {
        let out = split_whole("Hi. Yes. This one is long enough. Ok. Bye.", 12);
        assert_eq!(out, ["Hi. Yes. This one is long enough. ", "Ok. Bye."]);
    }

    #[test]
    fn streaming_in_any_piece_size_gives_the_same_sentences() {
        let text = "Dr. No said 3.5 is fine. Really?  Yes — \"quite.\" 好的。Next line\nhere. End";
        let whole = split_whole(text, 0);
        assert_eq!(whole.concat(), text);
        for step in 1..8 {
            assert_eq!(split_streamed(text, 0, step), whole, "step {step}");
            let merged = split_streamed(text, 20, step);
            assert_eq!(merged.concat(), text);
            let (last, rest) = merged.split_last().unwrap();
            assert!(rest.iter().all(|s| s.chars().count() >= 20), "{merged:?}");
            assert!(!last.is_empty());
        }
    }

    #[test]
    fn a_sentence_is_emitted_once_the_next_word_starts() {
        let mut s = SentenceSplitter::new(0);
        assert!(s.push("Hello.").is_empty(), "might be 'Hello.5'");
        assert!(s.push(" ").is_empty(), "the whitespace run is not over");
        assert_eq!(s.push("World"), ["Hello. "]);
        assert_eq!(s.finish().as_deref(), Some("World"));
        assert_eq!(s.finish(), None);
    }
}
