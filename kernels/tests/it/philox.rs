//! Philox4x32-10 against published and independent answers, and the statistics of the noise
//! functions built on it.

use sched_kernels::philox::{gaussian, philox4x32_10, uniform};

/// The known-answer vectors of Random123 (`kat_vectors`, philox4x32_10).
#[test]
fn random123_known_answers() {
    assert_eq!(philox4x32_10([0; 4], [0; 2]), [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]);
    assert_eq!(philox4x32_10([u32::MAX; 4], [u32::MAX; 2]), [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]);
    assert_eq!(
        philox4x32_10([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0]),
        [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]
    );
}

/// Random counters and keys, with the blocks computed by an independent implementation:
/// `randomgen.Philox(counter=c - 1, key=k, number=4, width=32).random_raw(4)` of randomgen 2.5.1
/// (which increments the counter before each block; words are little-endian within the integer),
/// after checking that it reproduces the three Random123 vectors above.
#[test]
fn randomgen_cross_check() {
    let cases: [([u32; 4], [u32; 2], [u32; 4]); 8] = [
        (
            [0x9b9b1325, 0xd1a6e55e, 0xc55a45f8, 0x566bf9d7],
            [0x4243ed52, 0xcf0c26ef],
            [0xc628bc3c, 0x94d015c9, 0xbe734ca0, 0x25988d65],
        ),
        (
            [0x265beda9, 0x5d96cf7f, 0xb7decc0c, 0xc1d77cff],
            [0xdd70e34d, 0x5e6a0a2e],
            [0xcddba386, 0x3124dc1c, 0x6060d1c6, 0xc414a45f],
        ),
        (
            [0x55ac0ecd, 0x04635137, 0x3b4a3ee2, 0xb37523a5],
            [0xad915a36, 0x4de45321],
            [0x9d5ff84d, 0xd9230de5, 0x6013ab4d, 0x4251a2d1],
        ),
        (
            [0xe6ba3ad7, 0x9823beb1, 0x1fcfb980, 0xdd4eabbd],
            [0x0cc8af11, 0x683447c1],
            [0x00e9cbf4, 0xce89b224, 0x703ad215, 0xbd6bdcb3],
        ),
        (
            [0x5bae2d26, 0xbfb637dd, 0x4ca87fc2, 0xaed09b82],
            [0x9a0b2361, 0x158d003d],
            [0x2b3d3b49, 0x419abeee, 0x70af863b, 0xed03f9a0],
        ),
        (
            [0x2e825ce1, 0x1ff13534, 0x07f0cbd4, 0x33f5f288],
            [0x53a2f2b6, 0x00d9f4ad],
            [0x4c49d2ce, 0xa92546cb, 0x2ca660bc, 0x60b60c53],
        ),
        (
            [0x3c234038, 0x4cc34636, 0x4d14cf1a, 0xd330a549],
            [0x6a423cf9, 0x668dc8f4],
            [0x57f3d65c, 0x86d36657, 0x8181daef, 0xaf7a3057],
        ),
        (
            [0x35c9a8c4, 0xd1784030, 0xf94855d0, 0x765890e0],
            [0x9f2e9ea4, 0xaf5d8bb0],
            [0x2508fe46, 0x4817e2cf, 0x9755fff5, 0xda237c09],
        ),
    ];
    for (counter, key, expected) in cases {
        assert_eq!(philox4x32_10(counter, key), expected, "counter {counter:08x?}, key {key:08x?}");
    }
}

/// The noise functions at random coordinates, with the expected values computed in Python from
/// the randomgen block with the definitions of the doc comments (`(r0 >> 8) * 2**-24`, and
/// `sqrt(-2 log u1) * cos(2 pi u2)` in double precision rounded to single).
#[test]
fn noise_functions_match_their_definition() {
    // (seed, site, step, sample, index, uniform bits, gaussian bits), with the values in decimal.
    let cases: [(u64, u32, u32, u32, u32, u32, u32); 6] = [
        (0xa9df_dec6_baec_de5b, 95, 422, 14, 1_016_533, 0x3e9b_8fd8, 0xbf84_21c2), // 0.30383182, -1.0322802
        (0xfdfb_462f_d6fa_d8db, 63, 876, 11, 58_476, 0x3f4a_bb87, 0x3f24_34d5),    // 0.79192394, 0.64143115
        (0xbf41_6c30_f1f0_742a, 146, 264, 5, 292_405, 0x3e86_4bbc, 0x3f46_5bf9),   // 0.26229656, 0.7748409
        (0x3a7c_fb36_6088_155f, 213, 223, 8, 158_420, 0x3f23_23b7, 0x3f6e_d56f),   // 0.6372637, 0.93294424
        (0x6dbb_8cb8_ef65_ed78, 175, 56, 13, 906_813, 0x3f7a_f58b, 0xbe45_1418),   // 0.9803092, -0.19245946
        (0xda0a_ea0e_aa72_870b, 96, 30, 5, 857_971, 0x3f26_d591, 0xbf1c_a8c4),     // 0.65169626, -0.6119502
    ];
    for (seed, site, step, sample, index, u, z) in cases {
        // The uniform draw involves no libm function, so it must match exactly.
        assert_eq!(uniform(seed, site, step, sample, index).to_bits(), u);
        // The Gaussian goes through the platform's `log` and `cos`, which may differ in the last
        // bit between libms; one f32 ulp of slack covers that, since the f64 result is rounded
        // once to f32.
        let got = gaussian(seed, site, step, sample, index);
        let expected = f32::from_bits(z);
        assert!(
            got.to_bits().abs_diff(z) <= 1,
            "gaussian at {seed:x}/{site}/{step}/{sample}/{index}: {got} != {expected}"
        );
    }
}

/// The number of draws of the statistical tests.
const N: u32 = 1_000_000;

/// Every tolerance below is five standard errors of the statistic over `N` independent draws
/// (the standard error stated next to it), so a correct generator fails with probability below
/// one in a million per check; the draws are deterministic, so the tests are not flaky.
fn five_sigma(standard_error: f64) -> f64 {
    5.0 * standard_error
}

#[test]
fn gaussian_moments_and_tails() {
    let n = f64::from(N);
    let (mut sum, mut sum2, mut sum3, mut sum4) = (0.0_f64, 0.0_f64, 0.0_f64, 0.0_f64);
    let (mut beyond1, mut beyond2, mut beyond3) = (0_u32, 0_u32, 0_u32);
    let mut largest = 0.0_f32;
    for i in 0..N {
        let z = gaussian(0x5eed, 7, 3, i / 1000, i % 1000);
        assert!(z.is_finite());
        largest = largest.max(z.abs());
        let z = f64::from(z);
        sum += z;
        sum2 += z * z;
        sum3 += z * z * z;
        sum4 += z * z * z * z;
        beyond1 += u32::from(z.abs() > 1.0);
        beyond2 += u32::from(z.abs() > 2.0);
        beyond3 += u32::from(z.abs() > 3.0);
    }
    let mean = sum / n;
    let variance = sum2 / n - mean * mean;
    // Mean: standard error 1 / sqrt(N) = 1e-3.
    assert!(mean.abs() < five_sigma(1.0 / n.sqrt()), "mean {mean}");
    // Variance: the variance of z² is 2, so the standard error is sqrt(2 / N) ≈ 1.41e-3.
    assert!((variance - 1.0).abs() < five_sigma((2.0 / n).sqrt()), "variance {variance}");
    // Third moment: the variance of z³ is E z⁶ = 15, so the standard error is sqrt(15 / N).
    let third = sum3 / n;
    assert!(third.abs() < five_sigma((15.0 / n).sqrt()), "third moment {third}");
    // Fourth moment 3: the variance of z⁴ is E z⁸ - 9 = 105 - 9 = 96, standard error sqrt(96 / N).
    let fourth = sum4 / n;
    assert!((fourth - 3.0).abs() < five_sigma((96.0 / n).sqrt()), "fourth moment {fourth}");
    // Tails P(|z| > k) = erfc(k / sqrt 2); a count fraction p has standard error sqrt(p (1 - p) / N).
    for (count, p, k) in [
        (beyond1, 0.317_310_507_862_914_2, 1),
        (beyond2, 0.045_500_263_896_358_4, 2),
        (beyond3, 0.002_699_796_063_260_2, 3),
    ] {
        let fraction = f64::from(count) / n;
        let tolerance = five_sigma((p * (1.0 - p) / n).sqrt());
        assert!((fraction - p).abs() < tolerance, "P(|z| > {k}) = {fraction}, expected {p} ± {tolerance}");
    }
    // Box–Muller with u1 ≥ 2^-33 cannot exceed sqrt(66 ln 2) ≈ 6.764.
    assert!(largest < 6.77, "largest |z| {largest}");
}

#[test]
fn uniform_range_moments_and_histogram() {
    let n = f64::from(N);
    let (mut sum, mut sum2) = (0.0_f64, 0.0_f64);
    let mut bins = [0_u32; 16];
    for i in 0..N {
        let u = uniform(42, 1, 0, i / 4096, i % 4096);
        assert!((0.0..1.0).contains(&u), "uniform draw {u} outside [0, 1)");
        // The draw is a multiple of 2^-24.
        assert_eq!((u * 16_777_216.0).fract(), 0.0);
        bins[(u * 16.0) as usize] += 1;
        let u = f64::from(u);
        sum += u;
        sum2 += u * u;
    }
    let mean = sum / n;
    let variance = sum2 / n - mean * mean;
    // Mean 1/2: standard error sqrt((1/12) / N) ≈ 2.9e-4.
    assert!((mean - 0.5).abs() < five_sigma((1.0 / 12.0 / n).sqrt()), "mean {mean}");
    // Variance 1/12: the variance of (u - 1/2)² is 1/80 - 1/144, standard error ≈ 7.5e-5.
    assert!((variance - 1.0 / 12.0).abs() < five_sigma(((1.0 / 80.0 - 1.0 / 144.0) / n).sqrt()), "variance {variance}");
    // Each of 16 bins holds N/16 draws with standard error sqrt(N (1/16)(15/16)) ≈ 242.
    let expected = n / 16.0;
    let tolerance = five_sigma((n * (1.0 / 16.0) * (15.0 / 16.0)).sqrt());
    for (bin, &count) in bins.iter().enumerate() {
        assert!((f64::from(count) - expected).abs() < tolerance, "bin {bin} holds {count}");
    }
}

#[test]
fn uniform_extremes_stay_in_range() {
    // The largest word maps to 1 - 2^-24, never to 1; the smallest to 0. Search the stream for
    // values near both ends to check the mapping on real draws.
    let mut lowest = 1.0_f32;
    let mut highest = 0.0_f32;
    for i in 0..200_000 {
        let u = uniform(9, 0, 0, 0, i);
        lowest = lowest.min(u);
        highest = highest.max(u);
    }
    assert!((0.9999..1.0).contains(&highest), "highest {highest}");
    assert!((0.0..1e-4).contains(&lowest), "lowest {lowest}");
}

/// Counts the positions where two streams of 256 draws agree; independent streams of continuous
/// values agree essentially nowhere.
fn agreements(a: impl Fn(u32) -> f32, b: impl Fn(u32) -> f32) -> usize {
    (0..256).filter(|&i| a(i).to_bits() == b(i).to_bits()).count()
}

#[test]
fn every_coordinate_changes_the_stream() {
    let base = |i| gaussian(1, 2, 3, 4, i);
    assert_eq!(agreements(base, |i| gaussian(1, 2, 3, 4, i)), 256);
    assert_eq!(agreements(base, |i| gaussian(2, 2, 3, 4, i)), 0, "seed");
    assert_eq!(agreements(base, |i| gaussian(1 | (1 << 32), 2, 3, 4, i)), 0, "seed high word");
    assert_eq!(agreements(base, |i| gaussian(1, 3, 3, 4, i)), 0, "site");
    assert_eq!(agreements(base, |i| gaussian(1, 2, 4, 4, i)), 0, "step");
    assert_eq!(agreements(base, |i| gaussian(1, 2, 3, 5, i)), 0, "sample");
    assert_eq!(agreements(base, |i| gaussian(1, 2, 3, 4, i + 1)), 0, "index");
    let base = |i| uniform(1, 2, 3, 4, i);
    assert_eq!(agreements(base, |i| uniform(2, 2, 3, 4, i)), 0, "seed");
    assert_eq!(agreements(base, |i| uniform(1, 3, 3, 4, i)), 0, "site");
    assert_eq!(agreements(base, |i| uniform(1, 2, 4, 4, i)), 0, "step");
    assert_eq!(agreements(base, |i| uniform(1, 2, 3, 5, i)), 0, "sample");
}

#[test]
fn uniform_and_gaussian_share_the_block() {
    // The uniform draw is the top 24 bits of word 0, which is also u1 of the Gaussian.
    for i in 0..64 {
        let r = philox4x32_10([i, 5, 6, 7], [8, 9]);
        let seed = 8 | (9 << 32);
        assert_eq!(uniform(seed, 7, 6, 5, i), (r[0] >> 8) as f32 / 16_777_216.0);
        let u1 = (f64::from(r[0]) + 0.5) / 4_294_967_296.0;
        let u2 = (f64::from(r[1]) + 0.5) / 4_294_967_296.0;
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        assert_eq!(gaussian(seed, 7, 6, 5, i).to_bits(), (z as f32).to_bits());
    }
}
