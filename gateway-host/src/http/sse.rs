//! Server-sent event responses, written lean: each frame is encoded straight into the chunk
//! being built, the frames that are ready together leave as one chunk (one write instead of
//! one per token when an upstream delivers several at once), and a `: keep-alive` comment
//! fills every silence of `keepalive_secs`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use tokio::time::{Instant, Sleep};

/// The comment sent after a silence.
const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// A chunk is sent once it holds this many bytes, even if more frames are ready.
const MAX_CHUNK: usize = 64 * 1024;
/// Room reserved for the first frame of a chunk.
const FIRST_RESERVE: usize = 1024;

/// Appends the frame `event: <event>\n` (when given) `data: <data>\n\n`. A line break in
/// `data` starts another `data:` line, as the SSE format requires.
pub fn frame(out: &mut BytesMut, event: Option<&str>, data: &[u8]) {
    if let Some(event) = event {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    out.reserve(data.len() + 8);
    out.put_slice(b"data: ");
    let mut from = 0;
    for at in memchr::memchr2_iter(b'\n', b'\r', data) {
        out.put_slice(&data[from..=at]);
        out.put_slice(b"data: ");
        from = at + 1;
    }
    out.put_slice(&data[from..]);
    out.put_slice(b"\n\n");
}

/// Appends the frame `data: <value as JSON>\n\n` (`event: <event>\n` first when given),
/// serialising `value` in place. JSON text never holds a raw line break.
pub fn json_frame<T: serde::Serialize + ?Sized>(
    out: &mut BytesMut,
    event: Option<&str>,
    value: &T,
) {
    if let Some(event) = event {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"data: ");
    // Writing into memory cannot fail, and the types sent serialise without errors.
    let _ = serde_json::to_writer(out.writer(), value);
    out.put_slice(b"\n\n");
}

/// A `text/event-stream` response: `encode` appends the frames of each item of `items`.
pub fn response<S, F>(items: S, encode: F, keep_alive: Duration) -> Response
where
    S: Stream + Unpin + Send + 'static,
    F: FnMut(S::Item, &mut BytesMut) + Unpin + Send + 'static,
{
    let body = SseStream {
        items,
        encode,
        done: false,
        timer: Box::pin(tokio::time::sleep(keep_alive)),
        keep_alive,
        last_sent: Instant::now(),
    };
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

/// The body stream of [`response`].
struct SseStream<S, F> {
    items: S,
    encode: F,
    done: bool,
    /// Fires a keep-alive `keep_alive` after the last chunk. Chunks do not move it: when it
    /// fires early it is set again from `last_sent`, so a token costs no timer update.
    timer: Pin<Box<Sleep>>,
    keep_alive: Duration,
    last_sent: Instant,
}

impl<S, F> Stream for SseStream<S, F>
where
    S: Stream + Unpin,
    F: FnMut(S::Item, &mut BytesMut) + Unpin,
{
    type Item = Result<Bytes, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut chunk = BytesMut::new();
        while chunk.len() < MAX_CHUNK {
            match Pin::new(&mut this.items).poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    if chunk.capacity() == 0 {
                        chunk.reserve(FIRST_RESERVE);
                    }
                    (this.encode)(item, &mut chunk);
                }
                Poll::Ready(None) => {
                    this.done = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if !chunk.is_empty() {
            this.last_sent = Instant::now();
            return Poll::Ready(Some(Ok(chunk.freeze())));
        }
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            ready!(this.timer.as_mut().poll(cx));
            let due = this.last_sent + this.keep_alive;
            if Instant::now() < due {
                this.timer.as_mut().reset(due);
                continue;
            }
            this.last_sent = Instant::now();
            this.timer.as_mut().reset(this.last_sent + this.keep_alive);
            return Poll::Ready(Some(Ok(Bytes::from_static(KEEP_ALIVE))));
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    #[test]
    fn frames_split_line_breaks_into_data_lines() {
        let mut out = BytesMut::new();
        frame(&mut out, Some("delta"), b"{\"a\":1}");
        frame(&mut out, None, b"one\ntwo\r\nthree");
        json_frame(&mut out, None, &serde_json::json!({"t": "x\ny"}));
        assert_eq!(
            &out[..],
            b"event: delta\ndata: {\"a\":1}\n\n\
              data: one\ndata: two\rdata: \ndata: three\n\n\
              data: {\"t\":\"x\\ny\"}\n\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ready_frames_share_a_chunk_and_silence_gets_a_keep_alive() {
        let (tx, rx) = futures::channel::mpsc::unbounded::<&'static str>();
        let encode = |item: &str, out: &mut BytesMut| frame(out, None, item.as_bytes());
        let mut body = SseStream {
            items: rx,
            encode,
            done: false,
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(5))),
            keep_alive: Duration::from_secs(5),
            last_sent: Instant::now(),
        };
        // 3 s in, two frames are ready: they leave as one chunk.
        tokio::time::advance(Duration::from_secs(3)).await;
        tx.unbounded_send("a").unwrap();
        tx.unbounded_send("b").unwrap();
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(&chunk[..], b"data: a\n\ndata: b\n\n");
        let sent = Instant::now();
        // Nothing for 5 s after that chunk (paused clock: the runtime advances it): a
        // keep-alive comment, counted from the chunk, not from the start.
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(&chunk[..], KEEP_ALIVE);
        assert_eq!(sent.elapsed(), Duration::from_secs(5));
        tx.unbounded_send("c").unwrap();
        drop(tx);
        let chunk = body.next().await.unwrap().unwrap();
        assert_eq!(&chunk[..], b"data: c\n\n");
        assert!(body.next().await.is_none());
        assert!(body.next().await.is_none(), "stays ended");
    }
}
