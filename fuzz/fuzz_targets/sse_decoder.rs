//! SseDecoder on arbitrary bytes split at arbitrary points: never panics, and the events do
//! not depend on where the body was split (the first input byte picks the chunk size).
#![no_main]

use gateway_openai_compat::sse::{decode_all, SseDecoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&split, body)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(split % 17) + 1;
    let whole = decode_all([body]);
    let pieces = decode_all(body.chunks(chunk));
    assert_eq!(whole, pieces, "events depend on the split (chunk size {chunk})");
    // A small limit must fail cleanly, never panic or grow without bound.
    let mut small = SseDecoder::with_limit(64);
    for piece in body.chunks(chunk) {
        small.push(piece);
        while let Ok(Some(event)) = small.next_event() {
            assert!(event.data.len() <= 64 * 3, "limit exceeded: {}", event.data.len());
        }
    }
    small.finish();
    while let Ok(Some(_)) = small.next_event() {}
});
