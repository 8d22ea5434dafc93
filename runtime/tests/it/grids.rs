//! The grid spacings against their definitions (docs/grids.md), the values published in
//! `notes/samplers.md`, and the grids diffusers used for the conformance fixtures
//! (`tests/conformance/fixtures/*.json`).

use sched_compiler::grid::Spacing;
use sched_runtime::grid::{Grid, GridError, materialize};
use sched_runtime::interpolant::{BetaSchedule, DiscreteVp, Interpolant};
use std::path::PathBuf;

fn sd() -> Interpolant {
    Interpolant::Discrete(DiscreteVp::new(BetaSchedule::STABLE_DIFFUSION, 1000))
}

fn cosine_table() -> Interpolant {
    Interpolant::Discrete(DiscreteVp::new(BetaSchedule::SquaredCosCapV2, 1000))
}

fn leading(offset: i64) -> Spacing {
    Spacing::Leading { offset, train_steps: 1000, ddim_stride: false }
}

fn trailing() -> Spacing {
    Spacing::Trailing { train_steps: 1000, ddim_stride: false }
}

fn linspace() -> Spacing {
    Spacing::Linspace { train_steps: 1000, ddim_stride: false }
}

fn grid(from: f64, to: f64, steps: usize, spacing: &Spacing, interpolant: &Interpolant) -> Grid {
    match materialize(from, to, steps, spacing, interpolant) {
        Ok(grid) => grid,
        Err(error) => panic!("{} {from} -> {to}, {steps} steps: {error}", spacing.name()),
    }
}

/// The diffusers timesteps `k` of a discrete grid's points (all but the last): `t N − 1`.
fn timesteps(grid: &Grid) -> Vec<i64> {
    grid.points[..grid.points.len() - 1].iter().map(|t| (t * 1000.0).round() as i64 - 1).collect()
}

fn assert_close(got: &[f64], expected: &[f64], tolerance: f64, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: {got:?} vs {expected:?}");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= tolerance, "{what}[{i}]: got {g}, expected {e} (all: {got:?})");
    }
}

fn all_spacings() -> Vec<Spacing> {
    vec![
        Spacing::Uniform,
        Spacing::Quadratic,
        Spacing::Cosine,
        Spacing::Karras { rho: 7.0 },
        Spacing::Exponential,
        Spacing::LogSnr,
        Spacing::Shift { k: 3.0 },
        leading(1),
        trailing(),
        linspace(),
    ]
}

#[test]
fn every_spacing_decreases_strictly_from_start_to_end() {
    let interpolants = [sd(), cosine_table()];
    for interpolant in &interpolants {
        for spacing in all_spacings() {
            for steps in [1, 2, 7, 10, 50] {
                let g = grid(1.0, 0.0, steps, &spacing, interpolant);
                let what = format!("{} ({}) with {steps} steps", spacing.name(), interpolant.name());
                assert_eq!(g.points.len(), steps + 1, "{what}");
                assert_eq!(g.steps(), steps, "{what}");
                assert!(g.points.windows(2).all(|w| w[0] > w[1]), "{what}: {:?}", g.points);
                assert_eq!(*g.points.last().unwrap_or(&f64::NAN), 0.0, "{what}");
                assert_eq!(g.pair_ends, g.points[1..].to_vec(), "{what}");
                let pairs: Vec<(f64, f64)> = g.pairs().collect();
                assert_eq!(pairs.len(), steps, "{what}");
                match spacing {
                    // diffusers starts these at its first timestep, which is 1 only for some of them.
                    Spacing::Leading { .. } | Spacing::Trailing { .. } | Spacing::Linspace { .. } => {
                        assert!(g.points[0] <= 1.0, "{what}")
                    }
                    _ => assert_eq!(g.points[0], 1.0, "{what}"),
                }
            }
        }
    }
}

#[test]
fn continuous_spacings_keep_both_ends_of_partial_grids() {
    for spacing in [Spacing::Uniform, Spacing::Quadratic, Spacing::Cosine, Spacing::Shift { k: 3.0 }] {
        for interpolant in [Interpolant::RectifiedFlow, sd()] {
            let g = grid(0.8, 0.1, 6, &spacing, &interpolant);
            assert_eq!(g.points[0], 0.8, "{}", spacing.name());
            assert_eq!(g.points[6], 0.1, "{}", spacing.name());
            assert!(g.points.windows(2).all(|w| w[0] > w[1]), "{}: {:?}", spacing.name(), g.points);
        }
    }
}

#[test]
fn continuous_spacings_follow_their_definitions() {
    let flow = Interpolant::RectifiedFlow;
    let uniform = grid(1.0, 0.0, 4, &Spacing::Uniform, &flow);
    assert_close(&uniform.points, &[1.0, 0.75, 0.5, 0.25, 0.0], 1e-15, "uniform");

    // Evenly spaced in sqrt(t): t_i = (1 − i/4)², dense near the data.
    let quadratic = grid(1.0, 0.0, 4, &Spacing::Quadratic, &flow);
    assert_close(&quadratic.points, &[1.0, 0.5625, 0.25, 0.0625, 0.0], 1e-15, "quadratic");
    assert!(quadratic.points[3] - quadratic.points[4] < quadratic.points[0] - quadratic.points[1]);

    // t = 1 − cos(u π/2) for u = 1, 3/4, 1/2, 1/4, 0: dense near the data as well.
    let cosine = grid(1.0, 0.0, 4, &Spacing::Cosine, &flow);
    let expected: Vec<f64> =
        [1.0, 0.75, 0.5, 0.25, 0.0].iter().map(|u: &f64| 1.0 - (u * std::f64::consts::FRAC_PI_2).cos()).collect();
    assert_close(&cosine.points, &expected, 1e-15, "cosine");
    assert!(cosine.points[3] - cosine.points[4] < cosine.points[0] - cosine.points[1]);

    // shift(3) on 5 uniform steps, as SD3 with `sigmas=` passed: 3u/(1 + 2u).
    let shifted = grid(1.0, 0.0, 5, &Spacing::Shift { k: 3.0 }, &flow);
    let expected = [1.0, 2.4 / 2.6, 1.8 / 2.2, 1.2 / 1.8, 0.6 / 1.4, 0.0];
    assert_close(&shifted.points, &expected, 1e-15, "shift(3)");

    // A partial shifted grid is evenly spaced in the unshifted coordinate between its ends.
    let partial = grid(0.9, 0.3, 3, &Spacing::Shift { k: 3.0 }, &flow);
    let unshift = |t: f64| t / (3.0 - 2.0 * t);
    let u: Vec<f64> = partial.points.iter().map(|&t| unshift(t)).collect();
    let gaps: Vec<f64> = u.windows(2).map(|w| w[0] - w[1]).collect();
    assert_close(&gaps, &[gaps[0]; 3], 1e-14, "partial shift gaps");
}

#[test]
fn flux_shift_reproduces_the_published_grid() {
    // notes §3.9: Flux at 1024², n = 4, sigmas = linspace(1, 1/n, n) and the exponential time shift
    // with mu = 1.15, which equals the static shift with k = e^mu.
    let g = grid(1.0, 0.0, 4, &Spacing::Shift { k: 1.15f64.exp() }, &Interpolant::RectifiedFlow);
    assert_close(&g.points, &[1.0, 0.9045, 0.7595, 0.5128, 0.0], 5e-5, "flux");
}

#[test]
fn discrete_spacings_reproduce_diffusers_timesteps() {
    // notes §3.0, n = 10, N = 1000.
    let interpolant = sd();
    let g = grid(1.0, 0.0, 10, &leading(1), &interpolant);
    assert_eq!(timesteps(&g), vec![901, 801, 701, 601, 501, 401, 301, 201, 101, 1]);
    let g = grid(1.0, 0.0, 10, &trailing(), &interpolant);
    assert_eq!(timesteps(&g), vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
    let g = grid(1.0, 0.0, 10, &linspace(), &interpolant);
    assert_eq!(timesteps(&g), vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    assert_eq!(g.points[0], 1.0);
    assert_eq!(g.points[9], 0.001);
    assert_eq!(g.points[10], 0.0);

    // Leading without an offset and rounding half to even (numpy's `round`).
    let g = grid(1.0, 0.0, 3, &leading(0), &interpolant);
    assert_eq!(timesteps(&g), vec![666, 333, 0]);
    let g = grid(1.0, 0.0, 8, &linspace(), &interpolant);
    // linspace(0, 999, 8) = 0, 142.71, 285.43, 428.14, 570.86, 713.57, 856.29, 999.
    assert_eq!(timesteps(&g), vec![999, 856, 714, 571, 428, 285, 143, 0]);
    let g = grid(1.0, 0.0, 3, &trailing(), &interpolant);
    assert_eq!(timesteps(&g), vec![999, 666, 332]);
}

#[test]
fn trailing_keeps_n_timesteps_where_numpy_arange_makes_one_more() {
    // numpy's arange(1000, 0, -1000/61) has 62 elements, and diffusers' trailing grid gets a 62nd
    // timestep −1; sched keeps the 61 intended ones.
    let g = grid(1.0, 0.0, 61, &trailing(), &sd());
    let ks = timesteps(&g);
    assert_eq!(ks.len(), 61);
    assert_eq!(ks[0], 999);
    assert_eq!(&ks[59..], &[32, 15]);
}

#[test]
fn ddim_stride_ends_each_pair_at_t_minus_n_over_steps() {
    let interpolant = sd();
    // linspace n = 10: the grid steps by 111, DDIM by 100 (notes §7.3, diffusers issue #12633).
    let spacing = Spacing::Linspace { train_steps: 1000, ddim_stride: true };
    let g = grid(1.0, 0.0, 10, &spacing, &interpolant);
    assert_eq!(timesteps(&g), vec![999, 888, 777, 666, 555, 444, 333, 222, 111, 0]);
    let expected = [0.9, 0.789, 0.678, 0.567, 0.456, 0.345, 0.234, 0.123, 0.012, 0.0];
    assert_close(&g.pair_ends, &expected, 1e-15, "linspace stride ends");

    // trailing n = 13 (issue #9261): the grid goes 999 -> 922, DDIM to 999 − 76 = 923.
    let spacing = Spacing::Trailing { train_steps: 1000, ddim_stride: true };
    let g = grid(1.0, 0.0, 13, &spacing, &interpolant);
    assert_eq!(g.points[1], 0.923);
    assert_eq!(g.pair_ends[0], 0.924);

    // leading: the stride is the grid's own, so the ends are the next points.
    let spacing = Spacing::Leading { offset: 1, train_steps: 1000, ddim_stride: true };
    let g = grid(1.0, 0.0, 10, &spacing, &interpolant);
    assert_close(&g.pair_ends, &g.points[1..], 1e-15, "leading stride ends");
}

#[test]
fn karras_reproduces_the_published_stable_diffusion_grid() {
    // notes §12: SD1.x, 20 steps, ρ = 7.
    let expected = [
        14.6146, 11.7254, 9.3402, 7.3836, 5.7894, 4.4998, 3.4647, 2.6408, 1.9909, 1.4832, 1.0908, 0.7909, 0.5647,
        0.3964, 0.2730, 0.1842, 0.1213, 0.0779, 0.0485, 0.0292, 0.0,
    ];
    let interpolant = sd();
    let g = grid(1.0, 0.0, 20, &Spacing::Karras { rho: 7.0 }, &interpolant);
    let kappas: Vec<f64> = g.points.iter().map(|&t| interpolant.kappa(t)).collect();
    // The notes print four decimals, truncated (3.464755 appears as 3.4647).
    assert_close(&kappas, &expected, 1e-4, "karras kappas");
    // And the fractional table indices n = tN − 1 of the same section (to its 2 decimals).
    let fractional = [
        999.0, 961.73, 921.04, 876.31, 826.79, 771.55, 709.53, 639.61, 560.97, 473.75, 380.13, 285.32, 197.08, 123.39,
        69.26, 34.70, 15.48, 5.99, 1.78, 0.0,
    ];
    let indices: Vec<f64> = g.points[..20].iter().map(|t| t * 1000.0 - 1.0).collect();
    // The notes interpolate the index in log κ (diffusers' `_sigma_to_t`); sched's table is linear in
    // κ, which moves the fractional indices by less than a fifth of an index.
    assert_close(&indices, &fractional, 0.2, "karras indices");

    // notes §3.0: the 10-step grid.
    let g = grid(1.0, 0.0, 10, &Spacing::Karras { rho: 7.0 }, &interpolant);
    let kappas: Vec<f64> = g.points.iter().map(|&t| interpolant.kappa(t)).collect();
    let expected = [14.6146, 9.1029, 5.4784, 3.1686, 1.7494, 0.9141, 0.4469, 0.2014, 0.0819, 0.0292, 0.0];
    assert_close(&kappas, &expected, 1e-4, "karras 10");
}

#[test]
fn kappa_spacings_are_evenly_spaced_in_their_coordinate() {
    let interpolant = sd();
    let (kappa_min, kappa_max) = interpolant.kappa_range().unwrap_or((f64::NAN, f64::NAN));
    let g = grid(1.0, 0.0, 6, &Spacing::Exponential, &interpolant);
    let logs: Vec<f64> = g.points[..6].iter().map(|&t| interpolant.kappa(t).ln()).collect();
    let expected: Vec<f64> =
        (0..6).map(|i| kappa_max.ln() + (kappa_min.ln() - kappa_max.ln()) * i as f64 / 5.0).collect();
    assert_close(&logs, &expected, 1e-9, "exponential");
    let logsnr = grid(1.0, 0.0, 6, &Spacing::LogSnr, &interpolant);
    assert_eq!(logsnr, g);

    // A grid that ends above the data has steps + 1 levels from κ(from) to κ(to).
    let g = grid(0.9, 0.2, 4, &Spacing::Karras { rho: 7.0 }, &interpolant);
    assert_eq!((g.points[0], g.points[4]), (0.9, 0.2));
    let roots: Vec<f64> = g.points.iter().map(|&t| interpolant.kappa(t).powf(1.0 / 7.0)).collect();
    let gaps: Vec<f64> = roots.windows(2).map(|w| w[0] - w[1]).collect();
    assert_close(&gaps, &[gaps[0]; 4], 1e-9, "karras partial");

    // Continuous interpolants: a partial grid needs no κ range.
    let g = grid(0.8, 0.1, 3, &Spacing::Exponential, &Interpolant::VpCosine);
    assert_eq!((g.points[0], g.points[3]), (0.8, 0.1));

    // VE: the range is (0.002, σ_max), and κ(1) = σ_max.
    let ve = Interpolant::Ve { sigma_max: 80.0 };
    let g = grid(1.0, 0.0, 5, &Spacing::Karras { rho: 7.0 }, &ve);
    assert_eq!(g.points[0], 1.0);
    assert!((ve.kappa(g.points[4]) - 0.002).abs() < 1e-12);
}

#[test]
fn invalid_grids_are_errors() {
    let interpolant = sd();
    let err = |from: f64, to: f64, steps: usize, spacing: &Spacing, interpolant: &Interpolant| match materialize(
        from,
        to,
        steps,
        spacing,
        interpolant,
    ) {
        Ok(g) => panic!("{} {from} -> {to} ({steps} steps) should fail, got {:?}", spacing.name(), g.points),
        Err(error) => error,
    };
    assert_eq!(err(1.0, 0.0, 0, &Spacing::Uniform, &interpolant), GridError::NoSteps);
    assert!(matches!(err(0.0, 1.0, 5, &Spacing::Uniform, &interpolant), GridError::NotDecreasing { .. }));
    assert!(matches!(err(0.5, 0.5, 5, &Spacing::Uniform, &interpolant), GridError::NotDecreasing { .. }));
    assert!(matches!(err(f64::NAN, 0.0, 5, &Spacing::Uniform, &interpolant), GridError::NotFinite { .. }));
    assert!(matches!(err(1.0, f64::INFINITY, 5, &Spacing::Uniform, &interpolant), GridError::NotFinite { .. }));
    assert!(matches!(err(1.5, 0.0, 5, &Spacing::Uniform, &interpolant), GridError::OutOfRange { .. }));
    assert!(matches!(err(1.0, -0.1, 5, &Spacing::Uniform, &interpolant), GridError::OutOfRange { .. }));

    let flow = Interpolant::RectifiedFlow;
    let no_range = err(1.0, 0.0, 10, &Spacing::Karras { rho: 7.0 }, &flow);
    assert!(matches!(no_range, GridError::NoKappaRange { .. }));
    assert!(no_range.to_string().contains("rectified_flow"), "{no_range}");
    assert!(matches!(err(0.9, 0.0, 10, &Spacing::Exponential, &flow), GridError::NoKappaRange { .. }));
    assert!(matches!(err(1.0, 0.1, 10, &Spacing::LogSnr, &flow), GridError::NoKappaRange { .. }));

    for rho in [0.0, -1.0, f64::NAN] {
        assert!(matches!(
            err(1.0, 0.0, 10, &Spacing::Karras { rho }, &interpolant),
            GridError::InvalidParameter { .. }
        ));
    }
    for k in [0.0, -2.0, f64::INFINITY] {
        assert!(matches!(err(1.0, 0.0, 10, &Spacing::Shift { k }, &flow), GridError::InvalidParameter { .. }));
    }

    let mismatch = err(1.0, 0.0, 10, &Spacing::Trailing { train_steps: 500, ddim_stride: false }, &interpolant);
    assert!(matches!(mismatch, GridError::TrainStepsMismatch { grid: 500, model: 1000, .. }), "{mismatch}");
    assert!(mismatch.to_string().contains("train_steps = 1000"), "{mismatch}");
    let zero = Spacing::Linspace { train_steps: 0, ddim_stride: false };
    assert!(matches!(err(1.0, 0.0, 10, &zero, &interpolant), GridError::InvalidParameter { .. }));
    assert!(matches!(err(1.0, 0.0, 1001, &linspace(), &interpolant), GridError::InvalidParameter { .. }));
    // leading with offset 1 at n = N puts the first timestep at N, past the table.
    assert!(matches!(err(1.0, 0.0, 1000, &leading(1), &interpolant), GridError::TimestepOutOfTable { .. }));
    assert!(matches!(err(1.0, 0.0, 10, &leading(-1), &interpolant), GridError::TimestepOutOfTable { .. }));
    // diffusers' first timestep must not be noisier than the grid's start.
    assert!(matches!(err(0.5, 0.0, 10, &trailing(), &interpolant), GridError::StartsAboveFrom { .. }));
    // A discrete grid whose last timestep is not above the end.
    assert!(matches!(err(1.0, 0.5, 10, &trailing(), &interpolant), GridError::NotStrictlyDecreasing { .. }));

    // Every error has a message that names the problem.
    assert!(GridError::NoSteps.to_string().contains("at least one step"));
}

#[test]
fn discrete_formulas_apply_to_continuous_interpolants() {
    let g = grid(1.0, 0.0, 10, &trailing(), &Interpolant::VpCosine);
    assert_eq!(timesteps(&g), vec![999, 899, 799, 699, 599, 499, 399, 299, 199, 99]);
}

/// The array of numbers under `grid.KEY` in a fixture.
fn fixture_array(fixture: &serde_json::Value, key: &str) -> Vec<f64> {
    fixture["grid"][key]
        .as_array()
        .unwrap_or_else(|| panic!("no grid.{key} in fixture"))
        .iter()
        .map(|v| v.as_f64().unwrap_or_else(|| panic!("grid.{key}: {v} is not a number")))
        .collect()
}

fn fixture(name: &str) -> serde_json::Value {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "tests", "conformance", "fixtures", &format!("{name}.json")]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn grids_match_the_diffusers_fixtures() {
    let discrete = |ddim_stride| Spacing::Leading { offset: 1, train_steps: 1000, ddim_stride };
    let cases: Vec<(&str, Spacing, Interpolant, usize)> = vec![
        ("ddim_eta0_leading", discrete(false), sd(), 10),
        ("ddim_eta07_leading", discrete(true), sd(), 10),
        ("ddim_eta0_trailing", Spacing::Trailing { train_steps: 1000, ddim_stride: true }, cosine_table(), 10),
        ("ddim_eta07_trailing", trailing(), cosine_table(), 10),
        ("ddim_linspace_stride", Spacing::Linspace { train_steps: 1000, ddim_stride: true }, sd(), 10),
        ("ddpm_leading", leading(1), sd(), 10),
        ("heun_linspace", linspace(), sd(), 10),
        ("dpmpp_2m_leading", leading(1), sd(), 10),
        ("dpmpp_2m_trailing", trailing(), sd(), 10),
        ("euler_karras", Spacing::Karras { rho: 7.0 }, sd(), 10),
        ("dpmpp_2m_karras", Spacing::Karras { rho: 7.0 }, sd(), 10),
        ("flow_euler_shift3", Spacing::Shift { k: 3.0 }, Interpolant::RectifiedFlow, 10),
    ];
    for (name, spacing, interpolant, steps) in cases {
        let text = fixture(name);
        let g = grid(1.0, 0.0, steps, &spacing, &interpolant);
        // Discrete times are exact; times from diffusers' float32 sigmas agree to float32 precision.
        assert_close(&g.points, &fixture_array(&text, "times"), 1e-6, &format!("{name} times"));
        assert_close(&g.pair_ends, &fixture_array(&text, "pair_ends"), 1e-6, &format!("{name} pair ends"));
        if text["grid"]["kappas"].is_array() {
            let kappas: Vec<f64> = g.points.iter().map(|&t| interpolant.kappa(t)).collect();
            let expected = fixture_array(&text, "kappas");
            for (i, (k, e)) in kappas.iter().zip(&expected).enumerate() {
                assert!((k - e).abs() <= 1e-6 * (1.0 + e), "{name} kappa[{i}]: {k} vs {e}");
            }
        }
    }

    // Euler's linspace is not rounded: at 8 steps it is the uniform grid 1 -> 1/N plus data.
    let text = fixture("euler_linspace");
    let mut g = grid(1.0, 0.001, 7, &Spacing::Uniform, &sd());
    g.points.push(0.0);
    assert_close(&g.points, &fixture_array(&text, "times"), 1e-6, "euler_linspace times");
    let rounded = grid(1.0, 0.0, 8, &linspace(), &sd());
    assert!((rounded.points[1] - g.points[1]).abs() > 1e-4, "sched's linspace rounds, Euler's does not");
}
