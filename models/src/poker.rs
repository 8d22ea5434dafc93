//! The poker-hands data set: two-word names of poker hands with chosen frequencies.
//!
//! A sample is a row `[first, second, <eos>]`. The frequencies are ours (documented here and in
//! docs/models.md), flatter than a real deal's, so that every hand shows up in ten thousand
//! samples and the product of the two words' marginals puts visible mass on pairs that no hand
//! has ("high house").

/// The hands: first word, second word, probability. The probabilities sum to 1.
pub const HANDS: &[(&str, &str, f64)] = &[
    ("high", "card", 0.30),
    ("one", "pair", 0.25),
    ("two", "pair", 0.12),
    ("three", "kind", 0.08),
    ("full", "house", 0.10),
    ("four", "kind", 0.05),
    ("straight", "flush", 0.05),
    ("royal", "flush", 0.05),
];

/// The vocabulary, in id order: the end token, the mask token, then the words.
pub const WORDS: &[&str] = &[
    "<eos>", "<mask>", "high", "one", "two", "three", "full", "four", "straight", "royal", "card", "pair", "kind",
    "house", "flush",
];

/// The id of the end token.
pub const EOS: u32 = 0;
/// The id of the mask token.
pub const MASK: u32 = 1;

/// The id of a word of [`WORDS`].
pub fn id(word: &str) -> Option<u32> {
    WORDS.iter().position(|w| *w == word).map(|i| i as u32)
}

/// The hands as id pairs with their probabilities.
pub fn hand_ids() -> Vec<(u32, u32, f64)> {
    HANDS
        .iter()
        .map(|(first, second, p)| {
            // Every word of HANDS is in WORDS (checked by the module's test).
            (id(first).unwrap_or(MASK), id(second).unwrap_or(MASK), *p)
        })
        .collect()
}

/// The invalid-pair rate of sampling the two words independently from their marginals:
/// `1 - Σ over hands of p₁(first) · p₂(second)`.
pub fn independent_invalid_rate() -> f64 {
    let hands = hand_ids();
    let marginal = |word: u32, position: usize| -> f64 {
        hands.iter().filter(|h| if position == 0 { h.0 == word } else { h.1 == word }).map(|h| h.2).sum()
    };
    let valid: f64 = hands.iter().map(|h| marginal(h.0, 0) * marginal(h.1, 1)).sum();
    1.0 - valid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hand_word_is_in_the_vocabulary_and_the_probabilities_sum_to_one() {
        for (first, second, _) in HANDS {
            assert!(id(first).is_some() && id(second).is_some(), "{first} {second}");
        }
        let total: f64 = HANDS.iter().map(|h| h.2).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }

    #[test]
    fn the_independent_invalid_rate_is_the_complement_of_the_valid_products() {
        // First-word marginals: high .30, one .25, two .12, three .08, full .10, four .05,
        // straight .05, royal .05. Second: card .30, pair .37, kind .13, house .10, flush .10.
        let valid = 0.30 * 0.30
            + 0.25 * 0.37
            + 0.12 * 0.37
            + 0.08 * 0.13
            + 0.10 * 0.10
            + 0.05 * 0.13
            + 0.05 * 0.10
            + 0.05 * 0.10;
        assert!((independent_invalid_rate() - (1.0 - valid)).abs() < 1e-12);
    }
}
