//! A push-based Server-Sent Events decoder: feed it bytes as they arrive, take events out.
//!
//! Pure and synchronous, so a fuzz target can drive it without a network. It accepts `data:`
//! with or without a space, CRLF, LF and lone CR line ends, `:` comment lines, and bytes split
//! anywhere (even inside a multi-byte UTF-8 character). It never panics and holds at most
//! [`SseDecoder::limit`] bytes of one event in memory.
//!
//! ```
//! use gateway_openai_compat::sse::SseDecoder;
//! let mut decoder = SseDecoder::new();
//! decoder.push(b": keep-alive\r\n\r\ndata:{\"a\"");
//! assert!(decoder.next_event().unwrap().is_none());
//! decoder.push(b":1}\r\n\r\n");
//! assert_eq!(decoder.next_event().unwrap().unwrap().data, r#"{"a":1}"#);
//! ```

/// Default most bytes one event (line plus data) may hold: 8 MiB.
pub const DEFAULT_LIMIT: usize = 8 * 1024 * 1024;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when one was sent.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n` (invalid UTF-8 replaced by U+FFFD).
    pub data: String,
    /// False when the stream ended before the blank line that closes the event.
    pub complete: bool,
}

/// What can go wrong while decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// One event grew beyond the decoder's limit.
    #[error("SSE event larger than {0} bytes")]
    TooLarge(usize),
}

/// Incremental SSE decoder: [`push`](Self::push) bytes, then call
/// [`next_event`](Self::next_event) until it returns `Ok(None)`; call
/// [`finish`](Self::finish) at end of input to flush an unterminated last event.
#[derive(Debug, Clone)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Start of the unprocessed part of `buf`.
    pos: usize,
    /// Bytes of `buf[pos..]` already known to hold no line end.
    scanned: usize,
    /// The previous line ended with CR: a leading LF belongs to it.
    skip_lf: bool,
    data: Vec<u8>,
    has_data: bool,
    event: Option<String>,
    eof: bool,
    limit: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// A decoder with the [`DEFAULT_LIMIT`].
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_LIMIT)
    }

    /// A decoder that fails with [`SseError::TooLarge`] beyond `limit` bytes per event.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            skip_lf: false,
            data: Vec::new(),
            has_data: false,
            event: None,
            eof: false,
            limit,
        }
    }

    /// The most bytes one event may hold.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Append received bytes. Bytes pushed after [`finish`](Self::finish) are ignored.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.eof || bytes.is_empty() {
            return;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 4096 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Mark the end of input: the last line and event are flushed by the next calls to
    /// [`next_event`](Self::next_event) even without their terminators.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// The next complete event, `Ok(None)` when more bytes are needed (or, after
    /// [`finish`](Self::finish), when everything was dispatched).
    pub fn next_event(&mut self) -> Result<Option<SseEvent>, SseError> {
        loop {
            if self.skip_lf && self.pos < self.buf.len() {
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                }
                self.skip_lf = false;
            }
            let rest = &self.buf[self.pos..];
            let from = self.scanned.min(rest.len());
            let found = memchr::memchr2(b'\n', b'\r', &rest[from..]).map(|i| i + from);
            let (line_end, next) = match found {
                Some(i) => {
                    let mut next = self.pos + i + 1;
                    if rest[i] == b'\r' {
                        match self.buf.get(next) {
                            Some(b'\n') => next += 1,
                            Some(_) => {}
                            None => self.skip_lf = true,
                        }
                    }
                    (self.pos + i, next)
                }
                None if self.eof => {
                    if rest.is_empty() {
                        return Ok(self.dispatch(false));
                    }
                    (self.buf.len(), self.buf.len())
                }
                None => {
                    self.scanned = rest.len();
                    if rest.len().saturating_add(self.data.len()) > self.limit {
                        return Err(self.fail());
                    }
                    return Ok(None);
                }
            };
            let start = self.pos;
            self.pos = next;
            self.scanned = 0;
            if line_end == start {
                if let Some(event) = self.dispatch(true) {
                    return Ok(Some(event));
                }
                continue;
            }
            self.field(start, line_end)?;
        }
    }

    /// Handle the field line `buf[start..end]` (not empty).
    fn field(&mut self, start: usize, end: usize) -> Result<(), SseError> {
        let line = &self.buf[start..end];
        if line[0] == b':' {
            return Ok(());
        }
        let (name, mut value) = match memchr::memchr(b':', line) {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &line[line.len()..]),
        };
        if value.first() == Some(&b' ') {
            value = &value[1..];
        }
        match name {
            b"data" => {
                if self.data.len().saturating_add(value.len()) + 1 > self.limit {
                    return Err(self.fail());
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => self.event = Some(String::from_utf8_lossy(value).into_owned()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, complete: bool) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        let bytes = std::mem::take(&mut self.data);
        let data = match String::from_utf8(bytes) {
            Ok(data) => data,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        Some(SseEvent {
            event,
            data,
            complete,
        })
    }

    /// Drop all buffered input and stop: an oversized event poisons the stream.
    fn fail(&mut self) -> SseError {
        self.buf.clear();
        self.pos = 0;
        self.scanned = 0;
        self.data.clear();
        self.has_data = false;
        self.eof = true;
        SseError::TooLarge(self.limit)
    }
}

/// Decode a whole body given as chunks: every event, in order (a convenience for tests and
/// fuzzing; the gateway drives [`SseDecoder`] incrementally).
pub fn decode_all<'a>(
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<SseEvent>, SseError> {
    let mut decoder = SseDecoder::new();
    let mut events = Vec::new();
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(event) = decoder.next_event()? {
            events.push(event);
        }
    }
    decoder.finish();
    while let Some(event) = decoder.next_event()? {
        events.push(event);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(chunks: &[&[u8]]) -> Vec<String> {
        decode_all(chunks.iter().copied())
            .unwrap()
            .into_iter()
            .map(|e| e.data)
            .collect()
    }

    fn bytewise(body: &[u8]) -> Vec<String> {
        data(&body.chunks(1).collect::<Vec<_>>())
    }

    #[test]
    fn line_ends_and_spaces() {
        for body in [
            &b"data: a\n\ndata:b\n\n"[..],
            b"data: a\r\n\r\ndata:b\r\n\r\n",
            b"data: a\r\rdata:b\r\r",
            b"data: a\r\n\rdata:b\n\r\n",
        ] {
            assert_eq!(data(&[body]), ["a", "b"], "{body:?}");
            assert_eq!(bytewise(body), ["a", "b"], "{body:?}");
        }
    }

    #[test]
    fn comments_multiline_and_fields() {
        let body =
            b": OPENROUTER PROCESSING\n\nevent: x\nid: 1\nretry: 5\ndata: a\ndata:  b\nfoo\n\n";
        let events = decode_all([&body[..]]).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].data, "a\n b");
        assert_eq!(events[0].event.as_deref(), Some("x"));
        assert!(events[0].complete);
    }

    #[test]
    fn unterminated_last_event_is_flushed_at_finish() {
        let events = decode_all([&b"data: [DONE]"[..]]).unwrap();
        assert_eq!(events[0].data, "[DONE]");
        assert!(!events[0].complete);
        let events = decode_all([&b"data: x\n"[..]]).unwrap();
        assert_eq!(events[0].data, "x");
        assert!(!events[0].complete);
    }

    #[test]
    fn utf8_split_anywhere() {
        let body = "data: {\"c\":\"Grüß 👋 日本語\"}\r\n\r\n".as_bytes();
        for cut in 0..=body.len() {
            assert_eq!(
                data(&[&body[..cut], &body[cut..]]),
                ["{\"c\":\"Grüß 👋 日本語\"}"]
            );
        }
        assert_eq!(bytewise(body), ["{\"c\":\"Grüß 👋 日本語\"}"]);
    }

    #[test]
    fn limit_is_enforced() {
        let mut decoder = SseDecoder::with_limit(16);
        decoder.push(b"data: 0123456789abcdefghij");
        assert_eq!(decoder.next_event(), Err(SseError::TooLarge(16)));
        let mut decoder = SseDecoder::with_limit(16);
        decoder.push(b"data: 0123456789\ndata: 0123456789\n");
        assert_eq!(decoder.next_event(), Err(SseError::TooLarge(16)));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut next = crate::xorshift(0x9E37_79B9_7F4A_7C15_u64);
        let alphabet = b"data: \r\n:{}\"\xff\xc3";
        for _ in 0..300 {
            let len = (next() % 200) as usize;
            let body: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            let whole = decode_all([&body[..]]).unwrap();
            let split = bytewise(&body);
            assert_eq!(whole.into_iter().map(|e| e.data).collect::<Vec<_>>(), split);
        }
    }
}
