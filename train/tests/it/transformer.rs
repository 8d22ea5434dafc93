//! The transformer's trainer: a model it trains and saves reloads with the same logits, and
//! training is deterministic for a seed.

use std::path::Path;

use sched_lang::types::ModelKind;
use sched_models::load::load_model;
use sched_models::poker::{self, EOS, MASK};
use sched_runtime::model::{TokenModel, TokenRows};
use sched_train::transformer::{TokenTrainConfig, save_poker, train_poker};

fn id(word: &str) -> u32 {
    poker::id(word).expect("a poker word")
}

fn rows(ids: &[u32], batch: usize) -> TokenRows<'_> {
    TokenRows { ids, batch, len: ids.len() / batch }
}

#[test]
fn a_model_saved_by_the_trainer_reloads_with_identical_logits() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("transformer").join("trained");
    let _ = std::fs::remove_dir_all(&dir);
    for kind in [ModelKind::CausalLm, ModelKind::MaskedLm, ModelKind::MtpLm] {
        let mut config = TokenTrainConfig::new(kind);
        config.steps = 3;
        config.batch = 16;
        let mut steps = 0;
        let (trained, report) = train_poker(&config, &mut |_| steps += 1).expect("trains");
        assert_eq!((steps, report.losses.len()), (3, 3));
        assert!(report.losses.iter().all(|l| l.is_finite()), "{:?}", report.losses);
        let path = save_poker(&trained, &dir).expect("saves");
        let loaded = load_model(&path.display().to_string(), None).expect("reloads");
        let loaded = loaded.tokens().expect("a token model");
        assert_eq!(loaded.vocab(), trained.vocab());
        let row = [id("three"), MASK, EOS];
        let (a, b) = match kind {
            ModelKind::MaskedLm => (trained.masked_logits(rows(&row, 1)), loaded.masked_logits(rows(&row, 1))),
            ModelKind::MtpLm => (trained.head_logits(rows(&row[..1], 1)), loaded.head_logits(rows(&row[..1], 1))),
            _ => (trained.causal_logits(rows(&row, 1), 0), loaded.causal_logits(rows(&row, 1), 0)),
        };
        let bits = |l: Vec<f32>| l.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a.expect("trained")), bits(b.expect("loaded")), "{kind}");
    }
    // Training is deterministic for a seed.
    let mut config = TokenTrainConfig::new(ModelKind::CausalLm);
    config.steps = 2;
    config.batch = 8;
    let first = train_poker(&config, &mut |_| {}).expect("trains").1.losses;
    let again = train_poker(&config, &mut |_| {}).expect("trains").1.losses;
    assert_eq!(first, again);
}
