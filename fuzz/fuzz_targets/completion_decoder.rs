//! CompletionDecoder on arbitrary bytes split at arbitrary points: never panics, the text is
//! exactly the concatenation of the deltas it returned, and the outcome does not depend on
//! where the body was split.
#![no_main]

use gateway_openai_compat::completion::CompletionDecoder;
use libfuzzer_sys::fuzz_target;

/// (concatenated deltas, final text or error cause).
fn run<'a>(chunks: impl Iterator<Item = &'a [u8]>) -> (String, Result<String, String>) {
    let mut decoder = CompletionDecoder::new();
    let mut deltas = String::new();
    for chunk in chunks {
        match decoder.push(chunk) {
            Ok(pieces) => pieces.iter().for_each(|p| deltas.push_str(p)),
            Err(e) => return (deltas, Err(e.cause())),
        }
        assert_eq!(decoder.text(), deltas, "text and deltas disagree");
    }
    match decoder.finish_with_deltas() {
        Ok((pieces, completion)) => {
            pieces.iter().for_each(|p| deltas.push_str(p));
            assert_eq!(completion.text, deltas, "final text and deltas disagree");
            (deltas, Ok(completion.text))
        }
        Err(e) => (deltas, Err(e.cause())),
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&split, body)) = input.split_first() else {
        return;
    };
    let chunk = usize::from(split % 13) + 1;
    let whole = run(std::iter::once(body));
    let pieces = run(body.chunks(chunk));
    assert_eq!(whole.1, pieces.1, "outcome depends on the split (chunk size {chunk})");
});
