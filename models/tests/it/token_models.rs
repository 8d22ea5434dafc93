//! The analytic token models (`analytic:poker`, `analytic:markov`) against the poker table and
//! brute-force enumeration: causal, masked and multi-token logits, determinism, and every error.

use std::sync::Arc;

use sched_lang::types::ModelKind;
use sched_models::load::load_model;
use sched_models::poker::{self, EOS, HANDS, MASK, WORDS};
use sched_runtime::interpolant::Interpolant;
use sched_runtime::model::{Model, ModelError};
use sched_runtime::model::{TokenModel, TokenRows};
use sched_runtime::tensor::Tensor;

const TOLERANCE: f64 = 1e-6;

fn load(spec: &str) -> Arc<dyn Model> {
    load_model(spec, None).unwrap_or_else(|e| panic!("{spec}: {e}"))
}

fn tokens(model: &Arc<dyn Model>) -> &dyn TokenModel {
    model.tokens().unwrap_or_else(|| panic!("{} is not a token model", model.info().source))
}

/// The rows of `ids` of length `len`; one empty row when `len` is 0.
fn rows(ids: &[u32], len: usize) -> TokenRows<'_> {
    TokenRows { ids, batch: ids.len().checked_div(len).unwrap_or(1), len }
}

fn word(text: &str) -> u32 {
    poker::id(text).unwrap_or_else(|| panic!("`{text}` is not a poker word"))
}

/// Checks that `logits` are the logs of `expected`: exp within the tolerance, and exactly `-inf`
/// where the probability is zero.
fn assert_law(logits: &[f32], expected: &[f64], what: &str) {
    assert_eq!(logits.len(), expected.len(), "{what}: length");
    for (token, (&logit, &p)) in logits.iter().zip(expected).enumerate() {
        if p == 0.0 {
            assert_eq!(logit, f32::NEG_INFINITY, "{what}: token {token} has probability 0");
        } else {
            let found = f64::from(logit).exp();
            assert!((found - p).abs() < TOLERANCE, "{what}: token {token}: {found} vs {p}");
        }
    }
}

/// A point mass on `token` over `size` tokens.
fn point(token: u32, size: usize) -> Vec<f64> {
    let mut law = vec![0.0; size];
    law[token as usize] = 1.0;
    law
}

// ---------------------------------------------------------------------------------------------
// Poker
// ---------------------------------------------------------------------------------------------

/// The law of `position` over the hands weighted by `weight` (the end token when they weigh 0).
fn hand_law(position: usize, weight: impl Fn(&[u32]) -> f64) -> Vec<f64> {
    let mut law = vec![0.0; WORDS.len()];
    let mut total = 0.0;
    for (first, second, p) in HANDS {
        let row = [word(first), word(second)];
        let w = p * weight(&row);
        total += w;
        law[row.get(position).copied().unwrap_or(EOS) as usize] += w;
    }
    if total == 0.0 {
        return point(EOS, WORDS.len());
    }
    law.iter().map(|w| w / total).collect()
}

/// A hand's token at `position` (the end token after its two words).
fn hand_token(hand: &[u32], position: usize) -> u32 {
    hand.get(position).copied().unwrap_or(EOS)
}

#[test]
fn poker_causal_marginals_and_conditionals_equal_the_hands_table() {
    let causal = load("analytic:poker");
    let mtp = load("analytic:poker(kind=mtp_lm, heads=3)");
    let model = tokens(&causal);
    assert_eq!(model.vocab().size, WORDS.len());
    assert_eq!((model.vocab().mask, model.vocab().eos), (Some(MASK), Some(EOS)));
    assert_eq!(model.vocab().word(word("flush")), "flush");

    // Position 0: the first-word marginal, straight from HANDS.
    let mut first = vec![0.0; WORDS.len()];
    for (w, _, p) in HANDS {
        first[word(w) as usize] += p;
    }
    let logits = model.causal_logits(rows(&[], 0), 0).expect("scores");
    assert_law(&logits, &first, "first word");
    assert_eq!(first[word("high") as usize], 0.30);

    // Position 1: P(second | first) for every token as the first (impossible ones end the row).
    let ids: Vec<u32> = (0..WORDS.len() as u32).filter(|&t| t != MASK).collect();
    let logits = model.causal_logits(rows(&ids, 1), 1).expect("scores");
    for (b, &w) in ids.iter().enumerate() {
        let mut expected = vec![0.0; WORDS.len()];
        let total: f64 = HANDS.iter().filter(|h| word(h.0) == w).map(|h| h.2).sum();
        for (_, second, p) in HANDS.iter().filter(|h| word(h.0) == w) {
            expected[word(second) as usize] += p / total;
        }
        if total == 0.0 {
            expected = point(EOS, WORDS.len());
        }
        let size = WORDS.len();
        assert_law(&logits[b * size..(b + 1) * size], &expected, &format!("second after {}", WORDS[w as usize]));
    }
    let pair = |a: &str, b: &str| model.causal_logits(rows(&[word(a), word(b)], 2), 1).expect("scores");
    assert_law(&pair("two", "pair")[..WORDS.len()], &point(word("pair"), WORDS.len()), "two -> pair");
    assert_law(&pair("four", "kind")[..WORDS.len()], &point(word("kind"), WORDS.len()), "four -> kind");
    let one = pair("one", "pair");
    assert!((f64::from(one[word("pair") as usize]).exp() - 1.0).abs() < TOLERANCE);

    // Positions >= 2 end the row, valid or not; a token after the end that is not the end has
    // probability zero and ends the row too.
    let long = [word("high"), word("card"), EOS, EOS, word("high"), word("house"), EOS, word("one")];
    let logits = model.causal_logits(rows(&long, 4), 0).expect("scores");
    let size = WORDS.len();
    for b in 0..2 {
        for j in 2..=4 {
            let at = (b * 5 + j) * size;
            assert_law(&logits[at..at + size], &point(EOS, size), &format!("row {b}, position {j}"));
        }
    }
    assert_law(&logits[size..2 * size], &hand_law(1, |h| f64::from(h[0] == word("high"))), "high ->");

    // The mask token is never predicted, and the mtp model's causal logits are the causal model's.
    assert!(logits.chunks_exact(size).all(|l| l[MASK as usize] == f32::NEG_INFINITY));
    assert_eq!(tokens(&mtp).causal_logits(rows(&long, 4), 0).expect("scores"), logits);
}

#[test]
fn poker_masked_conditionals_equal_enumeration_over_hands() {
    let masked = load("analytic:poker(kind=masked_lm)");
    let model = tokens(&masked);
    assert_eq!(model.heads(), 0);
    let size = WORDS.len();
    let mut bases: Vec<Vec<u32>> = HANDS.iter().map(|h| vec![word(h.0), word(h.1), EOS, EOS]).collect();
    bases.push(vec![word("high"), word("house"), EOS, EOS]);
    bases.push(vec![word("card"), word("high"), EOS, EOS]);
    bases.push(vec![word("full"), word("house"), word("one"), EOS]);
    bases.push(vec![word("royal"), word("flush"), EOS, word("kind")]);
    bases.push(vec![EOS, EOS, EOS, EOS]);
    for len in [3, 4] {
        for pattern in 0..1u32 << len {
            // Every base row with the positions of `pattern` masked, in one batch.
            let batch: Vec<u32> = bases
                .iter()
                .flat_map(|base| (0..len).map(move |j| if pattern & (1 << j) != 0 { MASK } else { base[j] }))
                .collect();
            let logits = model.masked_logits(rows(&batch, len)).expect("scores");
            assert_eq!(logits.len(), bases.len() * len * size);
            for (b, row) in batch.chunks_exact(len).enumerate() {
                let consistent = |hand: &[u32]| {
                    f64::from(row.iter().enumerate().all(|(j, &t)| t == MASK || hand_token(hand, j) == t))
                };
                for (j, &t) in row.iter().enumerate() {
                    let at = (b * len + j) * size;
                    let what = format!("row {row:?}, position {j}");
                    if t == MASK {
                        assert_law(&logits[at..at + size], &hand_law(j, consistent), &what);
                    } else {
                        let mut expected = vec![f32::NEG_INFINITY; size];
                        expected[t as usize] = 0.0;
                        assert_eq!(&logits[at..at + size], &expected[..], "{what}");
                    }
                }
            }
        }
    }
    // A concrete case: "? pair" is "one" with 0.25/0.37 and "two" with 0.12/0.37.
    let logits = model.masked_logits(rows(&[MASK, word("pair"), MASK], 3)).expect("scores");
    assert!((f64::from(logits[word("one") as usize]).exp() - 0.25 / 0.37).abs() < TOLERANCE);
    assert_law(&logits[2 * size..], &point(EOS, size), "after a pair");
}

#[test]
fn poker_heads_equal_the_causal_marginals() {
    let size = WORDS.len();
    let mtp = load("analytic:poker(kind=mtp_lm, heads=3)");
    let model = tokens(&mtp);
    assert_eq!(model.heads(), 3);
    let logits = model.head_logits(rows(&[], 0)).expect("scores");
    assert_law(&logits[..size], &hand_law(0, |_| 1.0), "head 0");
    assert_law(&logits[size..2 * size], &hand_law(1, |_| 1.0), "head 1");
    assert_law(&logits[2 * size..], &point(EOS, size), "head 2");
    for (first, _, _) in HANDS {
        let logits = model.head_logits(rows(&[word(first)], 1)).expect("scores");
        assert_law(&logits[..size], &hand_law(1, |h| f64::from(h[0] == word(first))), first);
        assert_law(&logits[size..2 * size], &point(EOS, size), first);
    }
    // Head 0 is the causal model's next token, bit for bit; a causal model has that one head.
    let causal = load("analytic:poker");
    let prefixes: &[&[u32]] = &[&[], &[word("two")], &[word("straight"), word("flush")], &[word("card")]];
    for prefix in prefixes {
        let len = prefix.len();
        let next = tokens(&causal).causal_logits(rows(prefix, len), len).expect("scores");
        assert_eq!(tokens(&causal).heads(), 1);
        assert_eq!(tokens(&causal).head_logits(rows(prefix, len)).expect("scores"), next);
        assert_eq!(model.head_logits(rows(prefix, len)).expect("scores")[..size], next[..]);
    }
}

#[test]
fn the_independent_invalid_rate_from_the_heads_is_the_data_sets() {
    let mtp = load("analytic:poker(kind=mtp_lm)");
    let logits = tokens(&mtp).head_logits(rows(&[], 0)).expect("scores");
    let size = WORDS.len();
    let p = |head: usize, token: u32| f64::from(logits[head * size + token as usize]).exp();
    let valid: f64 = HANDS.iter().map(|(a, b, _)| p(0, word(a)) * p(1, word(b))).sum();
    let rate = 1.0 - valid;
    assert!((rate - poker::independent_invalid_rate()).abs() < TOLERANCE, "{rate}");
    assert!(rate > 0.5, "independent heads make mostly invalid hands: {rate}");
}

// ---------------------------------------------------------------------------------------------
// Markov chains
// ---------------------------------------------------------------------------------------------

/// A chain recomputed from its definition (docs/models.md), independently of the runtime's code.
struct Chain {
    v: usize,
    order: usize,
    initial: Vec<f64>,
    first: Vec<f64>,
    second: Vec<f64>,
}

fn softmax(logits: Vec<f64>) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = e.iter().sum();
    e.iter().map(|x| x / total).collect()
}

impl Chain {
    fn new(v: usize, order: usize, seed: u64) -> Chain {
        let z = |site: u32, sample: usize, index: usize| {
            f64::from(sched_kernels::philox::gaussian(seed, site, 0, sample as u32, index as u32))
        };
        let initial = softmax((0..v).map(|a| z(0, 0, a)).collect());
        let mut first = Vec::new();
        for a in 0..v {
            first.extend(softmax((0..v).map(|b| 2.0 * z(1, a, b)).collect()));
        }
        let mut second = Vec::new();
        for a in 0..v {
            for b in 0..v {
                let weights: Vec<f64> = (0..v).map(|c| first[b * v + c] * (0.75 * z(2, a * v + b, c)).exp()).collect();
                let total: f64 = weights.iter().sum();
                second.extend(weights.iter().map(|w| w / total));
            }
        }
        Chain { v, order, initial, first, second }
    }

    /// The law of the next token after `prefix`.
    fn next(&self, prefix: &[usize]) -> Vec<f64> {
        let v = self.v;
        match prefix {
            [] => self.initial.clone(),
            [.., a, b] if self.order == 2 => self.second[(a * v + b) * v..(a * v + b + 1) * v].to_vec(),
            [.., b] => self.first[b * v..(b + 1) * v].to_vec(),
        }
    }

    fn joint(&self, row: &[usize]) -> f64 {
        (0..row.len()).map(|j| self.next(&row[..j])[row[j]]).product()
    }

    /// Brute force: the marginal law (over `v + 1` tokens, the mask last) of every position of
    /// rows of length `len` that agree with `observed` (`None` unknown).
    fn marginals(&self, observed: &[Option<usize>]) -> Vec<Vec<f64>> {
        let len = observed.len();
        let mut laws = vec![vec![0.0; self.v + 1]; len];
        let mut total = 0.0;
        for code in 0..self.v.pow(len as u32) {
            let row: Vec<usize> = (0..len).map(|j| code / self.v.pow(j as u32) % self.v).collect();
            if observed.iter().zip(&row).any(|(o, t)| o.is_some_and(|o| o != *t)) {
                continue;
            }
            let p = self.joint(&row);
            total += p;
            for (law, &t) in laws.iter_mut().zip(&row) {
                law[t] += p;
            }
        }
        laws.iter().map(|law| law.iter().map(|p| p / total).collect()).collect()
    }
}

fn markov_spec(v: usize, order: usize, seed: u64, kind: &str) -> String {
    format!("analytic:markov(vocab={v}, order={order}, seed={seed}, kind={kind})")
}

#[test]
fn markov_masked_conditionals_equal_enumeration_over_completions() {
    let (v, len) = (4, 5);
    let mask = v as u32;
    for order in [1, 2] {
        for seed in [0, 11] {
            let chain = Chain::new(v, order, seed);
            let loaded = load(&markov_spec(v, order, seed, "masked_lm"));
            let model = tokens(&loaded);
            assert_eq!((model.vocab().size, model.vocab().mask, model.vocab().eos), (v + 1, Some(mask), None));
            let base = [2u32, 0, 3, 3, 1];
            let patterns = [0b11111, 0b00000, 0b10101, 0b01010, 0b10001, 0b01110, 0b00011, 0b11000, 0b00100];
            let batch: Vec<u32> = patterns
                .iter()
                .flat_map(|p| (0..len).map(move |j| if p & (1 << j) != 0 { mask } else { base[j] }))
                .collect();
            let logits = model.masked_logits(rows(&batch, len)).expect("scores");
            for (b, row) in batch.chunks_exact(len).enumerate() {
                let observed: Vec<Option<usize>> =
                    row.iter().map(|&t| if t == mask { None } else { Some(t as usize) }).collect();
                for (j, law) in chain.marginals(&observed).iter().enumerate() {
                    let at = (b * len + j) * (v + 1);
                    assert_law(&logits[at..at + v + 1], law, &format!("order {order}, seed {seed}, row {row:?}, {j}"));
                }
            }
        }
    }
}

#[test]
fn markov_heads_equal_enumeration() {
    let v = 4;
    for order in [1, 2] {
        let chain = Chain::new(v, order, 5);
        let loaded = load(&format!("analytic:markov(vocab={v}, order={order}, seed=5, kind=mtp_lm, heads=3)"));
        let model = tokens(&loaded);
        let prefixes: &[&[u32]] = &[&[], &[1], &[3, 0], &[2, 2, 1]];
        for prefix in prefixes {
            let len = prefix.len();
            let logits = model.head_logits(rows(prefix, len)).expect("scores");
            let observed: Vec<Option<usize>> =
                prefix.iter().map(|&t| Some(t as usize)).chain([None, None, None]).collect();
            let laws = chain.marginals(&observed);
            for head in 0..3 {
                let at = head * (v + 1);
                assert_law(&logits[at..at + v + 1], &laws[len + head], &format!("order {order}, {prefix:?}, {head}"));
            }
        }
    }
}

#[test]
fn markov_causal_logits_are_the_transition_tables() {
    let v = 6;
    for order in [1, 2] {
        let chain = Chain::new(v, order, 9);
        let loaded = load(&markov_spec(v, order, 9, "causal_lm"));
        let model = tokens(&loaded);
        let ids = [4u32, 1, 1, 5, 0, 2, 3, 3, 0, 1];
        let logits = model.causal_logits(rows(&ids, 5), 0).expect("scores");
        assert_eq!(logits.len(), 2 * 6 * (v + 1));
        for (b, row) in ids.chunks_exact(5).enumerate() {
            let row: Vec<usize> = row.iter().map(|&t| t as usize).collect();
            for j in 0..=5 {
                let at = (b * 6 + j) * (v + 1);
                let scored = &logits[at..at + v + 1];
                let total: f64 = scored.iter().map(|&l| f64::from(l).exp()).sum();
                assert!((total - 1.0).abs() < TOLERANCE, "normalized: {total}");
                let mut expected = chain.next(&row[..j]);
                expected.push(0.0);
                assert_law(scored, &expected, &format!("order {order}, row {b}, position {j}"));
            }
        }
        // Scoring from a later position gives the tail of the same logits.
        let tail = model.causal_logits(rows(&ids, 5), 3).expect("scores");
        assert_eq!(tail[..3 * (v + 1)], logits[3 * (v + 1)..6 * (v + 1)]);
    }
}

#[test]
fn markov_chains_are_deterministic_and_order_one_drafts_order_two() {
    let v = 16;
    let next =
        |spec: &str, ids: &[u32], len: usize| tokens(&load(spec)).causal_logits(rows(ids, len), len).expect("scores");
    let contexts: Vec<u32> = (0..v as u32).flat_map(|a| (0..v as u32).flat_map(move |b| [a, b])).collect();
    let second = next(&markov_spec(v, 2, 1, "causal_lm"), &contexts, 2);
    assert_eq!(second, next(&markov_spec(v, 2, 1, "causal_lm"), &contexts, 2), "the same seed gives the same chain");
    assert_ne!(second, next(&markov_spec(v, 2, 2, "causal_lm"), &contexts, 2), "another seed gives another chain");
    let first = next(&markov_spec(v, 1, 1, "causal_lm"), &contexts, 2);
    let size = v + 1;
    let tv: Vec<f64> = first
        .chunks_exact(size)
        .zip(second.chunks_exact(size))
        .map(|(p, q)| {
            0.5 * p.iter().zip(q).map(|(a, b)| (f64::from(*a).exp() - f64::from(*b).exp()).abs()).sum::<f64>()
        })
        .collect();
    let mean = tv.iter().sum::<f64>() / tv.len() as f64;
    assert!(mean > 0.0 && mean < 0.5, "mean total variation {mean}");
    // The first two positions do not depend on the order at all.
    let start = |order| next(&markov_spec(v, order, 1, "causal_lm"), &[7], 1);
    assert_eq!(start(1), start(2));
}

// ---------------------------------------------------------------------------------------------
// The model around the law, and errors
// ---------------------------------------------------------------------------------------------

fn model_error<T: std::fmt::Debug>(result: Result<T, ModelError>) -> String {
    match result {
        Ok(value) => panic!("expected an error, got {value:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn token_models_describe_themselves_and_refuse_continuous_calls() {
    let loaded = load(" analytic:poker(kind=mtp_lm, heads=2) ");
    let info = loaded.info();
    assert_eq!(info.kind, ModelKind::MtpLm);
    assert_eq!(info.interpolant, Interpolant::RectifiedFlow);
    assert_eq!(info.sample_shape, Vec::<usize>::new());
    assert_eq!(info.num_classes, None);
    assert_eq!(info.source, "analytic:poker(kind=mtp_lm, heads=2)");
    let x = Tensor::new(vec![1, 2], vec![0.0, 0.0]);
    assert_eq!(
        model_error(loaded.field(&x, 0.5, None)),
        "analytic:poker(kind=mtp_lm, heads=2): a mtp_lm model cannot evaluate a continuous field (it is a token model)"
    );
    assert_eq!(
        model_error(loaded.jump(&x, 0.5, 0.0, None)),
        "analytic:poker(kind=mtp_lm, heads=2): a mtp_lm model cannot jump (it is a token model)"
    );
    assert_eq!(load("analytic:markov(kind=masked_lm)").info().kind, ModelKind::MaskedLm);
}

#[test]
fn calls_outside_a_kind_and_bad_rows_are_errors() {
    let causal = load("analytic:poker");
    let masked = load("analytic:poker(kind=masked_lm)");
    let mtp = load("analytic:markov(vocab=3, kind=mtp_lm)");
    let (c, m, h) = (tokens(&causal), tokens(&masked), tokens(&mtp));
    let row = [word("high"), word("card"), EOS];
    assert_eq!(
        model_error(c.masked_logits(rows(&row, 3))),
        "analytic:poker: a causal_lm model cannot score masked positions"
    );
    assert_eq!(
        model_error(h.masked_logits(rows(&[0, 1], 2))),
        "analytic:markov(vocab=3, kind=mtp_lm): a mtp_lm model cannot score masked positions"
    );
    assert_eq!(
        model_error(m.causal_logits(rows(&row, 3), 3)),
        "analytic:poker(kind=masked_lm): a masked_lm model cannot score next tokens"
    );
    assert_eq!(
        model_error(m.head_logits(rows(&row, 3))),
        "analytic:poker(kind=masked_lm): a masked_lm model cannot score next tokens from heads"
    );
    let short = TokenRows { ids: &row, batch: 2, len: 2 };
    assert_eq!(
        model_error(c.causal_logits(short, 0)),
        "analytic:poker: the rows hold 3 token ids, but 2 rows of length 2 need 4"
    );
    let overflow = TokenRows { ids: &row, batch: usize::MAX, len: 2 };
    assert_eq!(
        model_error(m.masked_logits(overflow)),
        format!(
            "analytic:poker(kind=masked_lm): the rows hold 3 token ids, but {} rows of length 2 need more than fit in memory",
            usize::MAX
        )
    );
    assert_eq!(
        model_error(c.causal_logits(rows(&[word("high"), 15], 1), 1)),
        "analytic:poker: row 1, position 0: token id 15 is outside the vocabulary (ids 0..15)"
    );
    assert_eq!(
        model_error(m.masked_logits(rows(&[MASK, 99], 2))),
        "analytic:poker(kind=masked_lm): row 0, position 1: token id 99 is outside the vocabulary (ids 0..15)"
    );
    assert_eq!(
        model_error(h.head_logits(rows(&[0, 4], 2))),
        "analytic:markov(vocab=3, kind=mtp_lm): row 0, position 1: token id 4 is outside the vocabulary (ids 0..4)"
    );
    assert_eq!(
        model_error(c.causal_logits(rows(&[word("one"), MASK], 2), 2)),
        "analytic:poker: row 0, position 1 holds the mask token <mask>, which only a masked model reads"
    );
    assert_eq!(
        model_error(h.causal_logits(rows(&[3], 1), 0)),
        "analytic:markov(vocab=3, kind=mtp_lm): row 0, position 0 holds the mask token <mask>, which only a masked model reads"
    );
    assert_eq!(
        model_error(c.causal_logits(rows(&row, 3), 4)),
        "analytic:poker: causal logits from position 4 of rows of length 3: the first scored position must be at most the length"
    );
    let huge = TokenRows { ids: &[], batch: usize::MAX, len: 0 };
    assert_eq!(
        model_error(h.head_logits(huge)),
        format!(
            "analytic:markov(vocab=3, kind=mtp_lm): the output of {} rows of 8 logits does not fit in memory",
            usize::MAX
        )
    );
    // Empty batches and empty rows are fine.
    let empty = TokenRows { ids: &[], batch: 0, len: 3 };
    assert_eq!(c.causal_logits(empty, 0).expect("scores"), Vec::<f32>::new());
    assert_eq!(m.masked_logits(empty).expect("scores"), Vec::<f32>::new());
    assert_eq!(m.masked_logits(TokenRows { ids: &[], batch: 4, len: 0 }).expect("scores"), Vec::<f32>::new());
    assert_eq!(h.head_logits(empty).expect("scores"), Vec::<f32>::new());
}

#[test]
fn spec_errors_are_exact() {
    let error = |spec: &str| match load_model(spec, None) {
        Ok(_) => panic!("`{spec}` loaded"),
        Err(e) => e.to_string(),
    };
    let cases = [
        (
            "analytic:poker(kind=velocity)",
            "`analytic:poker(kind=velocity)`: analytic:poker is a token model: kind must be one of causal_lm, masked_lm, mtp_lm",
        ),
        (
            "analytic:markov(kind=score)",
            "`analytic:markov(kind=score)`: analytic:markov is a token model: kind must be one of causal_lm, masked_lm, mtp_lm",
        ),
        (
            "analytic:gaussian(kind=mtp_lm)",
            "`analytic:gaussian(kind=mtp_lm)`: analytic:gaussian is a continuous model: kind must be one of eps, x0, v, velocity, score, flow_map, mean_flow, shortcut, consistency",
        ),
        (
            "analytic:poker(kind=maskd_lm)",
            "`analytic:poker(kind=maskd_lm)`: `kind = maskd_lm`: unknown kind (did you mean `masked_lm`?)",
        ),
        (
            "analytic:poker(head=2)",
            "`analytic:poker(head=2)`: unknown key `head` for analytic:poker (did you mean `heads`?)",
        ),
        (
            "analytic:markov(vocabulary=4)",
            "`analytic:markov(vocabulary=4)`: unknown key `vocabulary` for analytic:markov (did you mean `vocab`?)",
        ),
        ("analytic:pokr", "`analytic:pokr`: unknown analytic model `pokr` (did you mean `poker`?)"),
        (
            "analytic:markov(kind=masked_lm, heads=2)",
            "`analytic:markov(kind=masked_lm, heads=2)`: `heads` does not apply to kind masked_lm (it applies to mtp_lm)",
        ),
        (
            "analytic:markov(kind=mtp_lm, heads=0)",
            "`analytic:markov(kind=mtp_lm, heads=0)`: `heads = 0`: expected between 1 and 8 heads",
        ),
        (
            "analytic:poker(kind=mtp_lm, heads=two)",
            "`analytic:poker(kind=mtp_lm, heads=two)`: `heads = two`: expected a non-negative integer",
        ),
        (
            "analytic:markov(vocab=257)",
            "`analytic:markov(vocab=257)`: `vocab = 257`: a Markov chain has between 2 and 256 words",
        ),
        ("analytic:markov(vocab=x)", "`analytic:markov(vocab=x)`: `vocab = x`: expected a non-negative integer"),
        ("analytic:markov(order=0)", "`analytic:markov(order=0)`: `order = 0`: expected 1 or 2"),
        (
            "analytic:markov(seed=1.5)",
            "`analytic:markov(seed=1.5)`: `seed = 1.5`: expected an integer between 0 and 2^64 - 1",
        ),
    ];
    for (spec, message) in cases {
        assert_eq!(error(spec), message, "{spec}");
    }
}
