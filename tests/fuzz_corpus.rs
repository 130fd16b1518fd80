//! The fuzz targets' smoke run in the test command: every input of the kept corpus
//! (`fuzz/corpus/<target>/`: seeds, plus what the 30-minute cargo-fuzz runs found interesting)
//! and a few thousand mutations of it, through the entry points cargo-fuzz drives. The long runs
//! themselves need nightly Rust: see the README's "Fuzzing" section.

use std::path::Path;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no inputs", dir.display());
    inputs
}

/// Deterministic byte-level mutations (flip, insert, delete, splice), as a cheap stand-in for
/// libFuzzer's between the long runs.
fn mutations(inputs: &[Vec<u8>], count: usize, mut each: impl FnMut(&[u8])) {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..count {
        let mut input = inputs[i % inputs.len()].clone();
        for _ in 0..1 + next() % 4 {
            let at = if input.is_empty() {
                0
            } else {
                (next() as usize) % input.len()
            };
            match next() % 4 {
                0 if !input.is_empty() => input[at] ^= 1 << (next() % 8),
                1 => input.insert(at, next() as u8),
                2 if !input.is_empty() => {
                    input.remove(at);
                }
                _ => {
                    let other = &inputs[(next() as usize) % inputs.len()];
                    let from = (next() as usize) % (other.len() + 1);
                    input.splice(at..at, other[from..].iter().copied().take(16));
                }
            }
        }
        each(&input);
    }
}

#[test]
fn decode_record_survives_its_corpus_and_mutations() {
    let inputs = corpus("decode_record");
    for input in &inputs {
        eddy::fuzzing::decode_record(input);
    }
    mutations(&inputs, 20_000, eddy::fuzzing::decode_record);
}

#[test]
fn topology_file_survives_its_corpus_and_mutations() {
    let inputs = corpus("topology_file");
    for input in &inputs {
        eddy::fuzzing::topology_file(input);
    }
    mutations(&inputs, 5_000, eddy::fuzzing::topology_file);
}
