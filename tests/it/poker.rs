//! The poker-hands experiment on the exact model (README's table): independent multi-token
//! sampling writes invalid pairs at the rate the marginals predict; autoregressive decoding and
//! draft + verify never do.

use sched::poker;
use sched_models::load::load_model;
use sched_models::poker::independent_invalid_rate;

#[test]
fn independent_sampling_is_invalid_at_the_predicted_rate_and_the_others_never_are() {
    let mtp = load_model("analytic:poker(kind=mtp_lm, heads=2)", None).expect("the spec loads");
    let lm = load_model("analytic:poker(kind=causal_lm)", None).expect("the spec loads");
    let predicted = poker::predicted_independent_rate(mtp.as_ref()).expect("two heads");
    assert!((predicted - independent_invalid_rate()).abs() < 1e-6, "{predicted}");
    let rows = poker::run(&mtp, &lm, 10_000, 0).expect("the experiment runs");
    let line = |name: &str| rows.iter().find(|r| r.schedule == name).expect("every schedule runs");
    let independent = line("independent");
    let z = (independent.invalid_rate - predicted) / independent.standard_error;
    assert!(z.abs() < 4.0, "independent: {} against {predicted} (z = {z})", independent.invalid_rate);
    assert_eq!(independent.model_calls, 1);
    assert_eq!(line("autoregressive").invalid_rate, 0.0);
    assert_eq!(line("autoregressive").model_calls, 2);
    let verified = line("draft_verify");
    assert_eq!(verified.invalid_rate, 0.0);
    // The exact heads' first word is the next-token law's, so it is always accepted: one round.
    assert_eq!(verified.model_calls, 2);
    assert!(verified.tokens_per_sample >= 2.0, "{}", verified.tokens_per_sample);
}

#[test]
fn a_row_is_a_hand_only_when_its_first_two_words_are_one() {
    let id = |w: &str| sched_models::poker::id(w).expect("a poker word");
    assert!(poker::is_hand(&[id("full"), id("house"), id("<eos>")]));
    assert!(!poker::is_hand(&[id("high"), id("house")]));
    assert!(!poker::is_hand(&[id("high")]));
    assert!(!poker::is_hand(&[]));
}
