//! Replays inputs kept from fuzzing (`tests/fuzz-regressions/<target>/`, one file each; the
//! first byte picks the chunk size as in the fuzz targets) and checks the targets' properties:
//! no panic, events and outcome independent of where the body is split, text equal to the
//! concatenated deltas. A new case is one new file.

use std::path::PathBuf;

use gateway_openai_compat::completion::CompletionDecoder;
use gateway_openai_compat::sse::decode_all;

fn cases(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz-regressions")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("readable case"),
            )
        })
        .collect()
}

fn completion(chunks: impl Iterator<Item = Vec<u8>>) -> (String, Result<String, String>) {
    let mut decoder = CompletionDecoder::new();
    let mut deltas = String::new();
    for chunk in chunks {
        match decoder.push(&chunk) {
            Ok(pieces) => pieces.iter().for_each(|p| deltas.push_str(p)),
            Err(e) => return (deltas, Err(e.cause())),
        }
        assert_eq!(decoder.text(), deltas);
    }
    match decoder.finish_with_deltas() {
        Ok((pieces, done)) => {
            pieces.iter().for_each(|p| deltas.push_str(p));
            assert_eq!(done.text, deltas);
            (deltas, Ok(done.text))
        }
        Err(e) => (deltas, Err(e.cause())),
    }
}

#[test]
fn sse_decoder_regressions() {
    let cases = cases("sse_decoder");
    assert!(!cases.is_empty());
    for (name, input) in cases {
        let Some((&split, body)) = input.split_first() else {
            continue;
        };
        let chunk = usize::from(split % 17) + 1;
        assert_eq!(decode_all([body]), decode_all(body.chunks(chunk)), "{name}");
    }
}

#[test]
fn completion_decoder_regressions() {
    let cases = cases("completion_decoder");
    assert!(!cases.is_empty());
    for (name, input) in cases {
        let Some((&split, body)) = input.split_first() else {
            continue;
        };
        let chunk = usize::from(split % 13) + 1;
        let whole = completion(std::iter::once(body.to_vec()));
        let pieces = completion(body.chunks(chunk).map(<[u8]>::to_vec));
        assert_eq!(whole.1, pieces.1, "{name}");
    }
}
