//! The sample-quality metrics against their definitions (`runtime/src/metrics.rs`): exact values
//! on hand-computed examples, the closed form of a translated cloud, the data sets told apart,
//! and every error.

use sched_runtime::tensor::Tensor;
use sched_train::datasets::Dataset;
use sched_train::metrics::{DEFAULT_BANDWIDTHS, Estimate, Metric, MetricError, Set, mmd2_rbf, sliced_w2};

fn points(dim: usize, values: &[f32]) -> Tensor {
    Tensor::new(vec![values.len() / dim, dim], values.to_vec())
}

#[test]
fn sliced_w2_is_zero_on_identical_sets_and_symmetric() {
    let a = Dataset::Moons.sample(500, 1);
    let b = Dataset::Spirals.sample(300, 2);
    assert_eq!(sliced_w2(&a, &a, 64, 0).expect("valid sets"), 0.0);
    let ab = sliced_w2(&a, &b, 64, 5).expect("valid sets");
    assert!(ab > 0.1, "moons and spirals are {ab} apart");
    assert_eq!(ab, sliced_w2(&b, &a, 64, 5).expect("valid sets"));
}

#[test]
fn sliced_w2_of_a_translation_is_its_length_over_root_two() {
    // With b = a + Δ, every direction's sorted projections differ by θ·Δ, so W2² = (θ·Δ)², whose
    // mean over uniform unit directions in 2-D is |Δ|² E[cos² φ] = |Δ|²/2: SW2 = |Δ|/√2.
    let a = Dataset::Checker.sample(400, 3);
    let delta = [0.6f32, -0.3];
    let shifted: Vec<f32> = a.data.chunks(2).flat_map(|p| [p[0] + delta[0], p[1] + delta[1]]).collect();
    let b = points(2, &shifted);
    let expected = f64::hypot(0.6, 0.3) / 2f64.sqrt();
    let sw2 = sliced_w2(&a, &b, 1024, 11).expect("valid sets");
    assert!((sw2 / expected - 1.0).abs() < 0.03, "SW2 {sw2}, expected about {expected}");
}

#[test]
fn sliced_w2_of_unequal_sizes_is_the_exact_quantile_integral() {
    // In 1-D every direction is ±1, and W2² is the same for both. a = {0, 1} has the quantile
    // function 0 on (0, 1/2] and 1 on (1/2, 1]; b = {0, 0.5, 1} has 0 on (0, 1/3], 0.5 on
    // (1/3, 2/3] and 1 on (2/3, 1]. On the merged intervals the squared differences are
    // (0, 1/3]: 0, (1/3, 1/2]: 0.25, (1/2, 2/3]: 0.25, (2/3, 1]: 0, so
    // W2² = 0.25 · 1/6 + 0.25 · 1/6 = 1/12 and SW2 = sqrt(1/12).
    let a = points(1, &[1.0, 0.0]);
    let b = points(1, &[0.5, 1.0, 0.0]);
    for projections in [1, 7, 100] {
        let sw2 = sliced_w2(&a, &b, projections, 4).expect("valid sets");
        assert!((sw2 - (1.0f64 / 12.0).sqrt()).abs() < 1e-12, "{projections} projections: {sw2}");
        assert_eq!(sw2, sliced_w2(&b, &a, projections, 4).expect("valid sets"));
    }
    // For equal sizes it is the mean squared difference of the sorted values: {0, 3} vs {1, 1}
    // gives (1 + 4)/2.
    let sw2 = sliced_w2(&points(1, &[3.0, 0.0]), &points(1, &[1.0, 1.0]), 3, 0).expect("valid sets");
    assert!((sw2 - 2.5f64.sqrt()).abs() < 1e-12, "{sw2}");
}

#[test]
fn sliced_w2_directions_depend_on_the_seed_only() {
    let a = Dataset::Eight.sample(200, 1);
    let b = Dataset::Moons.sample(250, 2);
    let first = sliced_w2(&a, &b, 16, 9).expect("valid sets");
    assert_eq!(first, sliced_w2(&a, &b, 16, 9).expect("valid sets"));
    assert_ne!(first, sliced_w2(&a, &b, 16, 10).expect("valid sets"));
}

#[test]
fn mmd2_matches_hand_computed_examples() {
    // a = {(0,0), (1,0), (0,1)}, b = {(0,0), (1,1)}, h = 1, so k(x, y) = exp(−|x − y|²/2).
    // Within a: squared distances 1, 1, 2, so Σ_{i≠j} = 2(2e^{−1/2} + e^{−1}), over 3·2.
    // Within b: squared distance 2, so Σ_{i≠j} = 2e^{−1}, over 2·1.
    // Across: squared distances 0, 2 (from (0,0)), 1, 1 (from (1,0)), 1, 1 (from (0,1)), so
    // Σ = 1 + e^{−1} + 4e^{−1/2}, times 2/(3·2).
    // MMD² = (2e^{−1/2} + e^{−1})/3 + e^{−1} − (1 + e^{−1} + 4e^{−1/2})/3 = e^{−1} − (1 + 2e^{−1/2})/3.
    let a = points(2, &[0.0, 0.0, 1.0, 0.0, 0.0, 1.0]);
    let b = points(2, &[0.0, 0.0, 1.0, 1.0]);
    let expected = (-1.0f64).exp() - (1.0 + 2.0 * (-0.5f64).exp()) / 3.0;
    let mmd = mmd2_rbf(&a, &b, &[1.0]).expect("valid sets");
    assert!((mmd - expected).abs() < 1e-12, "{mmd}, expected {expected}");
    assert!((mmd - mmd2_rbf(&b, &a, &[1.0]).expect("valid sets")).abs() < 1e-15, "MMD² is symmetric");

    // Identical sets {(0,0), (1,0)}: the unbiased estimator is not 0. Within each set the only
    // pair gives e^{−1/2}; across, Σ = 2 + 2e^{−1/2} over 2·2. MMD² = 2e^{−1/2} − (1 + e^{−1/2}) = e^{−1/2} − 1.
    let c = points(2, &[0.0, 0.0, 1.0, 0.0]);
    let mmd = mmd2_rbf(&c, &c, &[1.0]).expect("valid sets");
    assert!((mmd - ((-0.5f64).exp() - 1.0)).abs() < 1e-12, "{mmd}");

    // The kernel is a sum over the bandwidths, so the estimate is too.
    let sum = mmd2_rbf(&a, &b, &[0.5, 2.0]).expect("valid sets");
    let parts = mmd2_rbf(&a, &b, &[0.5]).expect("valid sets") + mmd2_rbf(&a, &b, &[2.0]).expect("valid sets");
    assert!((sum - parts).abs() < 1e-12, "{sum} vs {parts}");
}

#[test]
fn sliced_w2_tells_the_data_sets_apart() {
    // Two held-out draws of the same data set are close; different data sets are far apart.
    // (64 directions keep the test fast in the dev profile.)
    let same =
        sliced_w2(&Dataset::Checker.sample(4000, 1), &Dataset::Checker.sample(4000, 2), 64, 0).expect("valid sets");
    let checker = Dataset::Checker.sample(1000, 1);
    let to_moons = sliced_w2(&checker, &Dataset::Moons.sample(1000, 3), 64, 0).expect("valid sets");
    let to_eight = sliced_w2(&checker, &Dataset::Eight.sample(1000, 4), 64, 0).expect("valid sets");
    assert!(same < 0.05, "SW2 between two checker samples: {same}");
    assert!(to_moons > 5.0 * same && to_eight > 5.0 * same, "SW2: same {same}, moons {to_moons}, eight {to_eight}");
}

#[test]
fn mmd2_tells_the_data_sets_apart() {
    // The MMD is quadratic in the sample size: 600 samples keep the test fast in the dev profile.
    let checker = Dataset::Checker.sample(600, 1);
    let same = mmd2_rbf(&checker, &Dataset::Checker.sample(600, 2), &DEFAULT_BANDWIDTHS).expect("valid sets");
    let to_moons = mmd2_rbf(&checker, &Dataset::Moons.sample(600, 3), &DEFAULT_BANDWIDTHS).expect("valid sets");
    let to_eight = mmd2_rbf(&checker, &Dataset::Eight.sample(600, 4), &DEFAULT_BANDWIDTHS).expect("valid sets");
    assert!(to_eight > 0.1, "MMD² between checker and eight: {to_eight}");
    assert!(same.abs() < 0.02 * to_eight, "MMD²: same {same}, eight {to_eight}");
    assert!(same.abs() < 0.05 * to_moons, "MMD²: same {same}, moons {to_moons}");
}

#[test]
fn bad_inputs_are_errors() {
    let a = points(2, &[0.0, 0.0, 1.0, 1.0]);
    let empty = Tensor::new(vec![0, 2], vec![]);
    assert_eq!(sliced_w2(&empty, &a, 8, 0), Err(MetricError::TooFewSamples { set: Set::First, count: 0, needed: 1 }));
    assert_eq!(mmd2_rbf(&a, &empty, &[1.0]), Err(MetricError::TooFewSamples { set: Set::Second, count: 0, needed: 2 }));
    let single = points(2, &[0.5, 0.5]);
    assert_eq!(mmd2_rbf(&single, &a, &[1.0]), Err(MetricError::TooFewSamples { set: Set::First, count: 1, needed: 2 }));
    assert!(sliced_w2(&single, &a, 8, 0).is_ok(), "one sample is enough for sliced W2");

    let three_d = points(3, &[0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let mismatch = MetricError::DimensionMismatch { first: vec![2, 2], second: vec![2, 3] };
    assert_eq!(sliced_w2(&a, &three_d, 8, 0), Err(mismatch.clone()));
    assert_eq!(mmd2_rbf(&a, &three_d, &[1.0]), Err(mismatch));

    let flat = Tensor::new(vec![4], vec![0.0; 4]);
    assert_eq!(sliced_w2(&flat, &a, 8, 0), Err(MetricError::Shape { set: Set::First, shape: vec![4], len: 4 }));
    let zero_dim = Tensor::new(vec![3, 0], vec![]);
    assert!(matches!(mmd2_rbf(&a, &zero_dim, &[1.0]), Err(MetricError::Shape { set: Set::Second, .. })));
    let short = Tensor { shape: vec![3, 2], data: vec![0.0; 5] };
    assert!(matches!(sliced_w2(&short, &a, 8, 0), Err(MetricError::Shape { set: Set::First, len: 5, .. })));

    let nan = points(2, &[0.0, 0.0, 1.0, f32::NAN]);
    let infinite = points(2, &[f32::INFINITY, 0.0, 1.0, 1.0]);
    assert!(matches!(
        sliced_w2(&nan, &a, 8, 0),
        Err(MetricError::NonFinite { set: Set::First, sample: 1, coordinate: 1, .. })
    ));
    assert!(matches!(
        mmd2_rbf(&a, &nan, &[1.0]),
        Err(MetricError::NonFinite { set: Set::Second, sample: 1, coordinate: 1, .. })
    ));
    assert_eq!(
        sliced_w2(&a, &infinite, 8, 0),
        Err(MetricError::NonFinite { set: Set::Second, sample: 0, coordinate: 0, value: f32::INFINITY })
    );

    assert_eq!(sliced_w2(&a, &a, 0, 0), Err(MetricError::ZeroProjections));
    assert_eq!(mmd2_rbf(&a, &a, &[]), Err(MetricError::NoBandwidths));
    assert_eq!(mmd2_rbf(&a, &a, &[1.0, 0.0]), Err(MetricError::Bandwidth { index: 1, value: 0.0 }));
    assert_eq!(mmd2_rbf(&a, &a, &[-0.5]), Err(MetricError::Bandwidth { index: 0, value: -0.5 }));
    assert_eq!(mmd2_rbf(&a, &a, &[f64::INFINITY]), Err(MetricError::Bandwidth { index: 0, value: f64::INFINITY }));
    assert!(matches!(mmd2_rbf(&a, &a, &[f64::NAN]), Err(MetricError::Bandwidth { index: 0, .. })));
    assert_eq!(mmd2_rbf(&a, &a, &[1e-200]), Err(MetricError::Bandwidth { index: 0, value: 1e-200 }));

    // The messages name what is wrong.
    let message = sliced_w2(&a, &three_d, 8, 0).expect_err("mismatch").to_string();
    assert!(message.contains("[2, 2]") && message.contains("[2, 3]"), "{message}");
    let message = sliced_w2(&nan, &a, 8, 0).expect_err("NaN").to_string();
    assert!(message.contains("first set") && message.contains("sample 1"), "{message}");
}

#[test]
fn estimates_are_the_mean_and_sample_deviation() {
    assert_eq!(Estimate::of(&[1.0, 2.0, 3.0]), Some(Estimate { mean: 2.0, std: 1.0, count: 3 }));
    assert_eq!(Estimate::of(&[5.0]), Some(Estimate { mean: 5.0, std: 0.0, count: 1 }));
    let estimate = Estimate::of(&[1.0, 1.0, 4.0, 6.0]).expect("finite values");
    // Mean 3; squared deviations 4, 4, 1, 9 sum to 18, over 3.
    assert_eq!(estimate.mean, 3.0);
    assert!((estimate.std - 6f64.sqrt()).abs() < 1e-15, "{estimate:?}");
    assert_eq!(Estimate::of(&[]), None);
    assert_eq!(Estimate::of(&[f64::NAN]), None);
    assert_eq!(Estimate::of(&[1.0, f64::INFINITY]), None);
}

#[test]
fn metrics_round_trip_their_names_and_dispatch() {
    assert_eq!(Metric::ALL.map(Metric::name), ["sw2", "mmd"]);
    for metric in Metric::ALL {
        assert_eq!(Metric::from_name(metric.name()), Some(metric));
    }
    assert_eq!(Metric::from_name("fid"), None);
    assert_eq!(Metric::from_name("SW2"), None);

    let samples = Dataset::Moons.sample(300, 1);
    let data = Dataset::Eight.sample(200, 2);
    let sw2 = Metric::Sw2.evaluate(&samples, &data, 3).expect("valid sets");
    assert_eq!(sw2, sliced_w2(&samples, &data, 256, 3).expect("valid sets"));
    assert_ne!(sw2, Metric::Sw2.evaluate(&samples, &data, 4).expect("valid sets"));
    let mmd = Metric::Mmd.evaluate(&samples, &data, 3).expect("valid sets");
    assert_eq!(mmd, mmd2_rbf(&samples, &data, &DEFAULT_BANDWIDTHS).expect("valid sets"));
    assert_eq!(mmd, Metric::Mmd.evaluate(&samples, &data, 4).expect("valid sets"));
    assert_eq!(
        Metric::Mmd.evaluate(&samples, &Tensor::new(vec![0, 2], vec![]), 0),
        Err(MetricError::TooFewSamples { set: Set::Second, count: 0, needed: 2 })
    );
}
