//! Fill-in-the-middle prompts on a tiny hand-made vocabulary with the markers (written as a
//! GGUF file in memory): the order of the parts, the repository context, and trimming to a
//! budget. Expected sequences are assembled from the tokenizer's own encoding of each part.

mod common;

use engine_core::infill::{self, ExtraFile, Infill, InfillError};
use engine_core::tokenizer::Tokenizer;

/// A SentencePiece vocabulary with a few pieces and `markers` as control tokens.
fn tokenizer(markers: &[&str]) -> Tokenizer {
    let pieces = [
        ("▁", -1.0),
        ("a", -2.0),
        ("b", -3.0),
        ("ab", -0.5),
        ("▁a", -1.5),
    ];
    common::tiny_vocab::spm(&pieces, markers)
}

const MARKERS: &[&str] = &["<fim_prefix>", "<fim_suffix>", "<fim_middle>"];

#[test]
fn a_vocabulary_without_markers_has_no_infill() {
    let tok = tokenizer(&[]);
    assert!(tok.fim_tokens().is_none());
    let input = Infill {
        prefix: "ab",
        ..Infill::default()
    };
    assert_eq!(
        infill::prompt(&tok, &input, 100),
        Err(InfillError::Unsupported)
    );
}

#[test]
fn prefix_suffix_middle_in_order() {
    let tok = tokenizer(MARKERS);
    let fim = tok.fim_tokens().unwrap();
    let input = Infill {
        prefix: "a ab",
        suffix: "b a",
        prompt: "ba",
        extra: &[],
    };
    let ids = infill::prompt(&tok, &input, 1000).unwrap();
    let mut want = Vec::new();
    if tok.add_bos() {
        want.push(tok.bos_id().unwrap());
    }
    want.push(fim.prefix);
    want.extend(tok.encode("a ab", false, false));
    want.extend(tok.encode("ba", false, false));
    want.push(fim.suffix);
    want.extend(tok.encode("b a", false, false));
    want.push(fim.middle);
    assert_eq!(ids, want);
    // The markers are never produced by encoding the text itself.
    let text = infill::prompt(
        &tok,
        &Infill {
            prefix: "<fim_middle>",
            ..Infill::default()
        },
        1000,
    )
    .unwrap();
    assert_eq!(text.iter().filter(|&&t| t == fim.middle).count(), 1);
}

#[test]
fn long_inputs_are_trimmed_at_three_to_one_keeping_what_is_near_the_gap() {
    let tok = tokenizer(MARKERS);
    let fim = tok.fim_tokens().unwrap();
    let prefix = "ab ".repeat(200);
    let suffix = "ba ".repeat(200);
    let budget = 103;
    let ids = infill::prompt(
        &tok,
        &Infill {
            prefix: &prefix,
            suffix: &suffix,
            ..Infill::default()
        },
        budget,
    )
    .unwrap();
    assert_eq!(ids.len(), budget);
    let bos = usize::from(tok.add_bos());
    let pre_at = ids.iter().position(|&t| t == fim.prefix).unwrap();
    let suf_at = ids.iter().position(|&t| t == fim.suffix).unwrap();
    assert_eq!(pre_at, bos);
    assert_eq!(*ids.last().unwrap(), fim.middle);
    let (kept_prefix, kept_suffix) = (&ids[pre_at + 1..suf_at], &ids[suf_at + 1..ids.len() - 1]);
    let room = budget - bos - 3;
    assert_eq!(kept_suffix.len(), room / 4);
    assert_eq!(kept_prefix.len(), room - room / 4);
    let full_prefix = tok.encode(&prefix, false, false);
    let full_suffix = tok.encode(&suffix, false, false);
    assert!(full_prefix.ends_with(kept_prefix));
    assert!(full_suffix.starts_with(kept_suffix));

    // A short prefix leaves its room to the suffix.
    let ids = infill::prompt(
        &tok,
        &Infill {
            prefix: "a",
            suffix: &suffix,
            ..Infill::default()
        },
        budget,
    )
    .unwrap();
    assert_eq!(ids.len(), budget);

    assert_eq!(
        infill::prompt(&tok, &Infill::default(), 2),
        Err(InfillError::TooSmall(bos + 3))
    );
}

#[test]
fn other_files_come_first_with_repository_markers() {
    let tok = tokenizer(&[
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        "<|repo_name|>",
        "<|file_sep|>",
    ]);
    let fim = tok.fim_tokens().unwrap();
    let (repo, sep) = (fim.repo.unwrap(), fim.file_separator.unwrap());
    let files = [
        ExtraFile {
            filename: "a.txt".into(),
            text: "ab".into(),
        },
        ExtraFile {
            filename: String::new(),
            text: "ba".into(),
        },
    ];
    let input = Infill {
        prefix: "a",
        suffix: "b",
        prompt: "",
        extra: &files,
    };
    let ids = infill::prompt(&tok, &input, 1000).unwrap();
    let mut want = Vec::new();
    if tok.add_bos() {
        want.push(tok.bos_id().unwrap());
    }
    want.push(repo);
    want.extend(tok.encode("myproject\n", false, false));
    want.push(sep);
    want.extend(tok.encode("a.txt\n", false, false));
    want.extend(tok.encode("ab", false, false));
    want.push(sep);
    want.extend(tok.encode("tmp\n", false, false));
    want.extend(tok.encode("ba", false, false));
    want.push(sep);
    want.extend(tok.encode("filename\n", false, false));
    want.push(fim.prefix);
    want.extend(tok.encode("a", false, false));
    want.push(fim.suffix);
    want.extend(tok.encode("b", false, false));
    want.push(fim.middle);
    assert_eq!(ids, want);

    // Without room for them, the files are cut from the front; the prefix and suffix stay.
    let tight = want.len() - 3;
    let ids = infill::prompt(&tok, &input, tight).unwrap();
    assert_eq!(ids.len(), tight);
    assert!(want.ends_with(&ids[usize::from(tok.add_bos())..]));
}
