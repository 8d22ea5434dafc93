//! The transformer token model: the shipped poker checkpoints against the exact distribution of
//! `poker::HANDS`, causal masking, the tokenizer, and every bad-checkpoint error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sched_kernels::tokens::softmax;
use sched_lang::types::ModelKind;
use sched_models::checkpoint::write_safetensors;
use sched_models::load::load_model;
use sched_models::mlp::MlpModel;
use sched_models::mlp::manifest::{Manifest, TimeInput};
use sched_models::mlp::random::write_random_mlp;
use sched_models::poker::{self, EOS, HANDS, MASK, WORDS};
use sched_models::transformer::TransformerModel;
use sched_models::transformer::tokenizer::write_word_level_tokenizer;
use sched_runtime::interpolant::Interpolant;
use sched_runtime::model::Model;
use sched_runtime::model::{TokenModel, TokenRows};

/// How far a trained model's distributions may be from the exact ones, in total variation.
const TOLERANCE: f64 = 0.05;

fn shipped(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/poker").join(format!("{kind}.safetensors"))
}

fn load(kind: &str) -> Arc<dyn Model> {
    let path = shipped(kind);
    match load_model(&path.display().to_string(), None) {
        Ok(model) => model,
        Err(e) => panic!("{e}"),
    }
}

fn tokens(model: &dyn Model) -> &dyn TokenModel {
    model.tokens().expect("a transformer is a token model")
}

fn id(word: &str) -> u32 {
    poker::id(word).expect("a poker word")
}

/// The exact distribution of the first word, over the vocabulary.
fn exact_first() -> Vec<f64> {
    let mut p = vec![0.0; WORDS.len()];
    for (first, _, q) in HANDS {
        p[id(first) as usize] += q;
    }
    p
}

/// The exact distribution of the second word, over the vocabulary.
fn exact_second() -> Vec<f64> {
    let mut p = vec![0.0; WORDS.len()];
    for (_, second, q) in HANDS {
        p[id(second) as usize] += q;
    }
    p
}

/// The exact distribution of the second word given the first.
fn exact_second_given(first: &str) -> Vec<f64> {
    let mut p = vec![0.0; WORDS.len()];
    for (f, second, q) in HANDS {
        if *f == first {
            p[id(second) as usize] += q;
        }
    }
    let total: f64 = p.iter().sum();
    p.iter().map(|x| x / total).collect()
}

fn point_mass(token: u32) -> Vec<f64> {
    let mut p = vec![0.0; WORDS.len()];
    p[token as usize] = 1.0;
    p
}

fn tv(p: &[f64], q: &[f64]) -> f64 {
    assert_eq!(p.len(), q.len());
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

/// The first words of the hands, each once.
fn first_words() -> Vec<&'static str> {
    let mut words: Vec<&str> = HANDS.iter().map(|h| h.0).collect();
    words.dedup();
    words
}

fn rows(ids: &[u32], batch: usize) -> TokenRows<'_> {
    TokenRows { ids, batch, len: ids.len() / batch.max(1) }
}

/// The distribution at position `k` of flat logits.
fn at(logits: &[f32], k: usize) -> Vec<f64> {
    let v = WORDS.len();
    softmax(&logits[k * v..(k + 1) * v])
}

#[test]
fn the_causal_model_matches_the_first_word_and_each_conditional() {
    let model = load("causal_lm");
    let lm = tokens(model.as_ref());
    assert_eq!((lm.vocab().size, lm.vocab().eos, lm.vocab().mask, lm.heads()), (15, Some(EOS), Some(MASK), 1));
    let first = lm.causal_logits(rows(&[], 1), 0).expect("scores the empty row");
    assert_eq!(first.len(), WORDS.len());
    let d = tv(&at(&first, 0), &exact_first());
    assert!(d < TOLERANCE, "P(first word): TV {d}");
    for word in first_words() {
        let row = [id(word)];
        let second = lm.causal_logits(rows(&row, 1), 1).expect("scores the next word");
        let d = tv(&at(&second, 0), &exact_second_given(word));
        assert!(d < TOLERANCE, "P(second | {word}): TV {d}");
    }
    // Every hand ends after its second word.
    let row = [id("full"), id("house")];
    let end = lm.causal_logits(rows(&row, 1), 2).expect("scores the end");
    assert!(at(&end, 0)[EOS as usize] > 0.95);
}

#[test]
fn the_masked_model_matches_the_marginals_and_the_conditionals() {
    let model = load("masked_lm");
    let lm = tokens(model.as_ref());
    assert_eq!(lm.heads(), 0);
    let both = [MASK, MASK, EOS];
    let logits = lm.masked_logits(rows(&both, 1)).expect("scores a masked row");
    assert_eq!(logits.len(), 3 * WORDS.len());
    let d = tv(&at(&logits, 0), &exact_first());
    assert!(d < TOLERANCE, "P(first word | [mask, mask, eos]): TV {d}");
    let d = tv(&at(&logits, 1), &exact_second());
    assert!(d < TOLERANCE, "P(second word | [mask, mask, eos]): TV {d}");
    // The observed end token is a point mass; the mask token is never predicted.
    assert_eq!(at(&logits, 2), point_mass(EOS));
    assert_eq!(logits[MASK as usize], f32::NEG_INFINITY);
    assert_eq!(logits[WORDS.len() + MASK as usize], f32::NEG_INFINITY);
    for word in first_words() {
        let row = [id(word), MASK, EOS];
        let logits = lm.masked_logits(rows(&row, 1)).expect("scores a masked row");
        let d = tv(&at(&logits, 1), &exact_second_given(word));
        assert!(d < TOLERANCE, "P(second | [{word}, mask, eos]): TV {d}");
        assert_eq!(at(&logits, 0), point_mass(id(word)));
    }
}

#[test]
fn the_multi_token_heads_match_the_marginals() {
    let model = load("mtp_lm");
    let lm = tokens(model.as_ref());
    assert_eq!(lm.heads(), 2);
    let logits = lm.head_logits(rows(&[], 1)).expect("scores the empty row");
    assert_eq!(logits.len(), 2 * WORDS.len());
    let d = tv(&at(&logits, 0), &exact_first());
    assert!(d < TOLERANCE, "head 0 (first word): TV {d}");
    let d = tv(&at(&logits, 1), &exact_second());
    assert!(d < TOLERANCE, "head 1 (second word, marginally): TV {d}");
    // After a first word, head 0 is the conditional and head 1 the end.
    for word in first_words() {
        let row = [id(word)];
        let logits = lm.head_logits(rows(&row, 1)).expect("scores a prefix");
        let d = tv(&at(&logits, 0), &exact_second_given(word));
        assert!(d < TOLERANCE, "head 0 after {word}: TV {d}");
        let d = tv(&at(&logits, 1), &point_mass(EOS));
        assert!(d < TOLERANCE, "head 1 after {word}: TV {d}");
    }
    // Head 0 is the causal next-token distribution.
    let row = [id("two")];
    let heads = lm.head_logits(rows(&row, 1)).expect("heads");
    let causal = lm.causal_logits(rows(&row, 1), 1).expect("causal");
    assert_eq!(heads[..WORDS.len()], causal[..]);
}

#[test]
fn a_later_token_changes_no_earlier_causal_logits_but_changes_masked_ones() {
    let v = WORDS.len();
    for kind in ["causal_lm", "mtp_lm"] {
        let model = load(kind);
        let lm = tokens(model.as_ref());
        let a = [id("one"), id("pair"), EOS];
        let b = [id("one"), id("kind"), id("flush")];
        let la = lm.causal_logits(rows(&a, 1), 0).expect("scores a");
        let lb = lm.causal_logits(rows(&b, 1), 0).expect("scores b");
        assert_eq!(la.len(), 4 * v);
        // Outputs 0 and 1 see only the start token and "one": the same bits.
        let bits = |l: &[f32]| l.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&la[..2 * v]), bits(&lb[..2 * v]), "{kind}");
        assert_ne!(la[2 * v..3 * v], lb[2 * v..3 * v], "{kind}: output 2 sees position 1");
        // Batched rows give each row's own logits.
        let both: Vec<u32> = a.iter().chain(&b).copied().collect();
        let lab = lm.causal_logits(rows(&both, 2), 0).expect("scores both");
        assert_eq!(lab[..4 * v], la[..]);
        assert_eq!(lab[4 * v..], lb[..]);
    }
    let model = load("masked_lm");
    let lm = tokens(model.as_ref());
    let a = [MASK, id("card"), EOS];
    let b = [MASK, id("house"), EOS];
    let la = lm.masked_logits(rows(&a, 1)).expect("scores a");
    let lb = lm.masked_logits(rows(&b, 1)).expect("scores b");
    assert_ne!(la[..v], lb[..v], "the masked model is bidirectional");
    assert!(at(&la, 0)[id("high") as usize] > 0.9, "card comes after high");
    assert!(at(&lb, 0)[id("full") as usize] > 0.9, "house comes after full");
}

#[test]
fn bad_rows_and_kinds_are_errors() {
    let causal = load("causal_lm");
    let lm = tokens(causal.as_ref());
    let source = shipped("causal_lm").display().to_string();
    let long = [id("high"); 8];
    let e = lm.causal_logits(rows(&long, 1), 8).expect_err("too long").to_string();
    assert_eq!(
        e,
        format!("{source}: a row of 8 tokens plus the start token needs 9 positions, more than the model's max_len 8")
    );
    let bad = [id("high"), 15];
    let e = lm.causal_logits(rows(&bad, 1), 0).expect_err("out of range").to_string();
    assert_eq!(e, format!("{source}: token id 15 (row 0, position 1) is out of range: the vocabulary has ids 0..15"));
    let e = lm.causal_logits(rows(&bad[..1], 1), 2).expect_err("from past the end").to_string();
    assert_eq!(e, format!("{source}: cannot score from position 2 of rows of length 1"));
    let e = lm.masked_logits(rows(&bad[..1], 1)).expect_err("not masked").to_string();
    assert_eq!(e, format!("{source}: a causal_lm model cannot score masked positions (it is not a masked_lm)"));
    let e = causal.field(&sched_runtime::tensor::Tensor::new(vec![1], vec![0.0]), 0.5, None).expect_err("field");
    assert_eq!(
        e.to_string(),
        format!("{source}: a causal_lm model cannot evaluate a continuous field (it is a token model)")
    );
    let masked = load("masked_lm");
    let e = tokens(masked.as_ref()).causal_logits(rows(&[], 1), 0).expect_err("not causal").to_string();
    assert!(e.ends_with("a masked_lm model cannot score next tokens (it is bidirectional)"), "{e}");
}

#[test]
fn the_tokenizer_gives_the_vocabulary_and_round_trips_text() {
    let model = TransformerModel::load(&shipped("causal_lm")).expect("loads");
    let words: Vec<String> = WORDS.iter().map(|w| (*w).to_string()).collect();
    assert_eq!(model.vocab().words.as_ref(), Some(&words));
    let ids = model.encode("full house").expect("encodes");
    assert_eq!(ids, [id("full"), id("house")]);
    let text: Vec<String> = ids.iter().map(|&i| model.vocab().word(i)).collect();
    assert_eq!(text.join(" "), "full house");
    assert_eq!(model.encode("<mask> house").expect("encodes"), [MASK, id("house")]);
    let e = model.encode("full boat").expect_err("boat is no word").to_string();
    assert!(e.starts_with(&format!("{}: cannot encode `full boat`: ", shipped("causal_lm").display())), "{e}");
}

/// A fresh directory holding a copy of the shipped causal checkpoint, its manifest and tokenizer.
fn broken_copy(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("transformer").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates the test directory");
    let from = shipped("causal_lm");
    for file in ["causal_lm.safetensors", "causal_lm.toml", "tokenizer.json"] {
        std::fs::copy(from.with_file_name(file), dir.join(file)).expect("copies the checkpoint");
    }
    dir.join("causal_lm.safetensors")
}

/// Rewrites the manifest beside `path` with `edit` applied to its TOML values.
fn edit_manifest(path: &Path, edit: impl FnOnce(&mut toml::Table)) {
    let toml_path = path.with_extension("toml");
    let mut table: toml::Table =
        std::fs::read_to_string(&toml_path).expect("reads").parse().expect("the shipped manifest parses");
    edit(&mut table);
    std::fs::write(&toml_path, table.to_string()).expect("writes");
}

/// Rewrites the tensors of `path` with `edit` applied to (name → shape, values).
fn edit_tensors(path: &Path, edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<f32>)>)) {
    let tensors = candle_core::safetensors::load(path, &candle_core::Device::Cpu).expect("reads");
    let mut map: HashMap<String, (Vec<usize>, Vec<f32>)> = tensors
        .into_iter()
        .map(|(name, t)| {
            let values = t.flatten_all().and_then(|f| f.to_vec1::<f32>()).expect("f32");
            (name, (t.dims().to_vec(), values))
        })
        .collect();
    edit(&mut map);
    let list: Vec<(String, Vec<usize>, Vec<f32>)> = map.into_iter().map(|(n, (s, v))| (n, s, v)).collect();
    write_safetensors(path, &list, None).expect("writes");
}

fn load_error(path: &Path) -> String {
    match load_model(&path.display().to_string(), None) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

/// A change to a manifest's TOML values.
type Edit = Box<dyn FnOnce(&mut toml::Table)>;

#[test]
fn every_bad_manifest_is_an_error_naming_the_field() {
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "missing_field",
            Box::new(|t| {
                t.remove("d_model");
            }),
            "the field `d_model` is missing (the width of the residual stream)",
        ),
        (
            "missing_eos",
            Box::new(|t| {
                t.remove("eos_id");
            }),
            "the field `eos_id` is missing (the end token, also the causal start token)",
        ),
        (
            "bad_kind",
            Box::new(|t| {
                t.insert("kind".into(), "causal".into());
            }),
            "`kind = \"causal\"`: unknown kind (did you mean `causal_lm`?)",
        ),
        (
            "continuous_kind",
            Box::new(|t| {
                t.insert("kind".into(), "eps".into());
            }),
            "`kind = \"eps\"`: a transformer is a token model (causal_lm, masked_lm, mtp_lm), not a continuous `eps` model",
        ),
        (
            "masked_without_mask",
            Box::new(|t| {
                t.insert("kind".into(), "masked_lm".into());
                t.remove("mask_id");
            }),
            "the field `mask_id` is missing (the mask token of a masked_lm)",
        ),
        (
            "mask_out_of_range",
            Box::new(|t| {
                t.insert("mask_id".into(), 15.into());
            }),
            "`mask_id = 15`: out of range: the vocabulary has ids 0..15",
        ),
        (
            "eos_negative",
            Box::new(|t| {
                t.insert("eos_id".into(), (-1).into());
            }),
            "`eos_id = -1`: expected a non-negative integer",
        ),
        (
            "zero_layers",
            Box::new(|t| {
                t.insert("layers".into(), 0.into());
            }),
            "`layers = 0`: expected a positive integer",
        ),
        (
            "huge_layers",
            Box::new(|t| {
                t.insert("layers".into(), (1i64 << 40).into());
            }),
            "`layers = 1099511627776`: expected at most 16777216",
        ),
        (
            "heads_not_dividing",
            Box::new(|t| {
                t.insert("attention_heads".into(), 3.into());
            }),
            "`attention_heads = 3`: must divide `d_model = 32`",
        ),
        (
            "heads_on_causal",
            Box::new(|t| {
                t.insert("heads".into(), 2.into());
            }),
            "`heads = 2`: applies to `mtp_lm` only, not `causal_lm`",
        ),
        (
            "mtp_without_heads",
            Box::new(|t| {
                t.insert("kind".into(), "mtp_lm".into());
            }),
            "the field `heads` is missing (the number of output heads of an mtp_lm)",
        ),
        (
            "unknown_field",
            Box::new(|t| {
                t.insert("layer".into(), 2.into());
            }),
            "`layer = 2`: unknown field (did you mean `layers`?)",
        ),
        (
            "misspelt_architecture",
            Box::new(|t| {
                t.insert("architecture".into(), "transfomer".into());
            }),
            "`architecture = \"transfomer\"`: unknown architecture (did you mean `transformer`?)",
        ),
        (
            "unknown_architecture",
            Box::new(|t| {
                t.insert("architecture".into(), "cnn".into());
            }),
            "`architecture = \"cnn\"`: unknown architecture (expected one of: mlp, transformer)",
        ),
        (
            "no_architecture",
            Box::new(|t| {
                t.remove("architecture");
            }),
            "the field `architecture` is missing (expected one of \"mlp\", \"transformer\")",
        ),
    ];
    for (name, edit, expected) in cases {
        let path = broken_copy(name);
        edit_manifest(&path, edit);
        let manifest = path.with_extension("toml");
        assert_eq!(load_error(&path), format!("{}: {expected}", manifest.display()), "{name}");
    }
}

#[test]
fn each_loader_rejects_the_other_architecture() {
    let transformer = shipped("causal_lm");
    let e = MlpModel::load(&transformer).err().expect("not an MLP").to_string();
    assert_eq!(
        e,
        format!(
            "{}: `architecture = \"transformer\"`: this is not an MLP checkpoint (`load_model` loads every architecture)",
            transformer.with_extension("toml").display()
        )
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("transformer").join("mlp");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates the test directory");
    let mlp = dir.join("velocity.safetensors");
    let manifest = Manifest {
        kind: ModelKind::Velocity,
        interpolant: Interpolant::RectifiedFlow,
        time_input: TimeInput::T,
        preconditioning: None,
        sample_shape: vec![2],
        time_features: 4,
        classes: 0,
    };
    write_random_mlp(&mlp, &manifest, 1).expect("writes an MLP");
    assert_eq!(load_model(&mlp.display().to_string(), None).expect("loads the MLP").info().kind, ModelKind::Velocity);
    let e = TransformerModel::load(&mlp).err().expect("not a transformer").to_string();
    assert_eq!(
        e,
        format!(
            "{}: `architecture = \"mlp\"`: this is not a transformer checkpoint (`load_model` loads every architecture)",
            mlp.with_extension("toml").display()
        )
    );
}

#[test]
fn every_bad_tensor_and_tokenizer_is_an_error_naming_it() {
    let path = broken_copy("wrong_shape");
    edit_tensors(&path, |m| {
        m.insert("unembed.weight".into(), (vec![15, 31], vec![0.0; 15 * 31]));
    });
    assert_eq!(
        load_error(&path),
        format!("{}: tensor `unembed.weight` has shape [15, 31], expected [15, 32]", path.display())
    );

    let path = broken_copy("missing_tensor");
    edit_tensors(&path, |m| {
        m.remove("blocks.1.mlp.fc2.bias");
    });
    assert_eq!(
        load_error(&path),
        format!("{}: tensor `blocks.1.mlp.fc2.bias` is missing (expected shape [32])", path.display())
    );

    // A manifest that says more than the file holds.
    let path = broken_copy("too_many_layers");
    edit_manifest(&path, |t| {
        t.insert("layers".into(), 3.into());
    });
    assert_eq!(
        load_error(&path),
        format!("{}: tensor `blocks.2.ln1.weight` is missing (expected shape [32])", path.display())
    );

    let path = broken_copy("wrong_dtype");
    let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).expect("reads");
    let mut bytes: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = tensors
        .iter()
        .map(|(name, t)| {
            let values = t.flatten_all().and_then(|f| f.to_vec1::<f32>()).expect("f32");
            (
                name.clone(),
                t.dims().to_vec(),
                values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                safetensors::Dtype::F32,
            )
        })
        .collect();
    for entry in &mut bytes {
        if entry.0 == "ln_f.weight" {
            let wide: Vec<u8> = entry
                .2
                .chunks_exact(4)
                .flat_map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])).to_le_bytes())
                .collect();
            entry.2 = wide;
            entry.3 = safetensors::Dtype::F64;
        }
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(name, shape, data, dtype)| {
            (name.clone(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).expect("a view"))
        })
        .collect();
    std::fs::write(&path, safetensors::serialize(views, None).expect("serializes")).expect("writes");
    assert_eq!(load_error(&path), format!("{}: tensor `ln_f.weight` has dtype F64, expected F32", path.display()));

    let path = broken_copy("missing_tokenizer");
    edit_manifest(&path, |t| {
        t.insert("tokenizer".into(), "words.json".into());
    });
    assert_eq!(
        load_error(&path),
        format!(
            "{}: `tokenizer = \"words.json\"`: no such file: {}",
            path.with_extension("toml").display(),
            path.with_file_name("words.json").display()
        )
    );

    let path = broken_copy("short_tokenizer");
    let tokenizer = path.with_file_name("tokenizer.json");
    write_word_level_tokenizer(&tokenizer, &WORDS[..14], &[EOS, MASK]).expect("writes a tokenizer");
    assert_eq!(
        load_error(&path),
        format!(
            "{}: `vocab = 15`: the tokenizer {} has 14 tokens",
            path.with_extension("toml").display(),
            tokenizer.display()
        )
    );

    let path = broken_copy("not_a_tokenizer");
    let tokenizer = path.with_file_name("tokenizer.json");
    std::fs::write(&tokenizer, "{}").expect("writes");
    let e = load_error(&path);
    let prefix = format!(
        "{}: `tokenizer = \"tokenizer.json\"`: {} is not a tokenizer.json: ",
        path.with_extension("toml").display(),
        tokenizer.display()
    );
    assert!(e.starts_with(&prefix), "{e}");

    // Without a tokenizer the model loads, with no words.
    let path = broken_copy("no_tokenizer");
    edit_manifest(&path, |t| {
        t.remove("tokenizer");
    });
    let model = TransformerModel::load(&path).expect("loads without a tokenizer");
    assert_eq!(model.vocab().words, None);
    assert_eq!(
        model.encode("full house").expect_err("no tokenizer").to_string(),
        format!("{}: cannot encode text: the manifest names no tokenizer", path.display())
    );
}
