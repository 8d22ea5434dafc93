//! Analytic models against closed forms and independent computations.

use sched_lang::types::ModelKind;
use sched_models::analytic::ode::Tolerance;
use sched_models::analytic::{Component, Density, Gaussian, GaussianMixture, Posterior, parse_spec, transport_by_ode};
use sched_models::load::load_model;
use sched_runtime::convert::field_coefficients;
use sched_runtime::interpolant::{BetaSchedule, Interpolant};
use sched_runtime::model::{FieldKind, Model, ModelError};
use sched_runtime::tensor::Tensor;

const CONFORMANCE: &str =
    "analytic:gaussian(dim=4, mean=[0.5,-1,2,0], std=[0.3,1,0.5,2], kind=eps, interpolant=scaled_linear)";

fn model(spec: &str) -> Box<dyn Model> {
    match parse_spec(spec) {
        Ok(m) => Box::new(m),
        Err(e) => panic!("{spec}: {e}"),
    }
}

fn batch(points: &[[f32; 2]]) -> Tensor {
    Tensor::new(vec![points.len(), 2], points.iter().flatten().copied().collect())
}

fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (f64::from(*x) - y).abs()).fold(0.0, f64::max)
}

/// A spec and the kind, interpolant, sample shape and classes it must give.
type SpecCase<'a> = (&'a str, ModelKind, &'a str, &'a [usize], Option<usize>);

#[test]
fn the_documented_specs_parse() {
    let cases: &[SpecCase] = &[
        (
            "analytic:gmm(preset=eight, kind=eps, interpolant=scaled_linear)",
            ModelKind::Eps,
            "scaled_linear",
            &[2],
            None,
        ),
        (
            "analytic:gmm(preset=checker, kind=velocity, interpolant=rectified_flow)",
            ModelKind::Velocity,
            "rectified_flow",
            &[2],
            None,
        ),
        (
            "analytic:gmm(preset=classes, kind=eps, interpolant=scaled_linear)",
            ModelKind::Eps,
            "scaled_linear",
            &[2],
            Some(4),
        ),
        (
            "analytic:gmm(preset=checker, kind=flow_map, interpolant=rectified_flow)",
            ModelKind::FlowMap,
            "rectified_flow",
            &[2],
            None,
        ),
        (
            "analytic:gaussian(dim=2, kind=flow_map, interpolant=rectified_flow)",
            ModelKind::FlowMap,
            "rectified_flow",
            &[2],
            None,
        ),
        (
            "analytic:gaussian(dim=2, kind=mean_flow, interpolant=rectified_flow)",
            ModelKind::MeanFlow,
            "rectified_flow",
            &[2],
            None,
        ),
        (
            "analytic:gaussian(dim=2, kind=shortcut, interpolant=rectified_flow)",
            ModelKind::Shortcut,
            "rectified_flow",
            &[2],
            None,
        ),
        (
            "analytic:gaussian(dim=2, kind=consistency, interpolant=rectified_flow)",
            ModelKind::Consistency,
            "rectified_flow",
            &[2],
            None,
        ),
        (
            "analytic:gaussian(dim=1, length=8, kind=eps, interpolant=vp_cosine)",
            ModelKind::Eps,
            "vp_cosine",
            &[8, 1],
            None,
        ),
        (
            "analytic:gmm(preset=eight, kind=v, interpolant=squaredcos_cap_v2)",
            ModelKind::V,
            "squaredcos_cap_v2",
            &[2],
            None,
        ),
        (
            "analytic:gmm(preset=eight, kind=x0, interpolant=squaredcos_cap_v2)",
            ModelKind::X0,
            "squaredcos_cap_v2",
            &[2],
            None,
        ),
        (CONFORMANCE, ModelKind::Eps, "scaled_linear", &[4], None),
    ];
    for &(spec, kind, interpolant, shape, classes) in cases {
        let m = model(spec);
        let info = m.info();
        assert_eq!(info.kind, kind, "{spec}");
        assert_eq!(info.interpolant.name(), interpolant, "{spec}");
        assert_eq!(info.sample_shape, shape, "{spec}");
        assert_eq!(info.num_classes, classes, "{spec}");
        assert_eq!(info.source, spec);
    }
}

#[test]
fn conformance_gaussian_matches_the_closed_form() {
    let m = model(CONFORMANCE);
    let (mean, std) = ([0.5, -1.0, 2.0, 0.0], [0.3, 1.0, 0.5, 2.0]);
    let interp = &m.info().interpolant;
    let x = Tensor::new(vec![2, 4], vec![0.1, -0.7, 1.9, 3.0, -2.0, 0.0, 0.4, -1.5]);
    for t in [0.0, 0.02, 0.3, 0.61, 1.0] {
        let (a, s) = (interp.alpha(t), interp.sigma(t));
        let (eps, kind) = m.field(&x, t, None).expect("evaluates");
        assert_eq!(kind, FieldKind::Eps);
        let expected: Vec<f64> = (0..8)
            .map(|i| {
                let k = i % 4;
                let v = a * a * std[k] * std[k] + s * s;
                s * (f64::from(x.data[i]) - a * mean[k]) / v
            })
            .collect();
        assert!(max_abs_diff(&eps.data, &expected) < 1e-6, "t = {t}: {:?} vs {expected:?}", eps.data);
    }
}

#[test]
fn every_kind_gives_the_same_predictions() {
    // The same density presented as each local kind: converting each field with
    // `field_coefficients` must give the same x̂₀ and ε̂.
    for (density, interpolant) in
        [("gaussian(dim=2", "vp_cosine"), ("gmm(preset=eight", "scaled_linear"), ("gmm(preset=checker", "trigflow")]
    {
        let x = batch(&[[0.3, -0.4], [1.5, 1.2], [-2.0, 0.1]]);
        for t in [0.05, 0.4, 0.9] {
            let mut reference: Option<(Vec<f64>, Vec<f64>)> = None;
            for kind in ["eps", "x0", "v", "velocity", "score", "flow_map"] {
                let m = model(&format!("analytic:{density}, kind={kind}, interpolant={interpolant})"));
                let (field, field_kind) = m.field(&x, t, None).expect("evaluates");
                let c = field_coefficients(field_kind, &m.info().interpolant, t);
                let x0: Vec<f64> =
                    x.data.iter().zip(&field.data).map(|(&xv, &mv)| c.x0_of(xv.into(), mv.into())).collect();
                let eps: Vec<f64> =
                    x.data.iter().zip(&field.data).map(|(&xv, &mv)| c.eps_of(xv.into(), mv.into())).collect();
                match &reference {
                    None => reference = Some((x0, eps)),
                    Some((x0_ref, eps_ref)) => {
                        for i in 0..x0.len() {
                            // f32 outputs, amplified by up to 1/σ or 1/α.
                            let tol = 2e-5 * (1.0 + x0_ref[i].abs())
                                / (m.info().interpolant.sigma(t).min(m.info().interpolant.alpha(t)));
                            assert!(
                                (x0[i] - x0_ref[i]).abs() < tol,
                                "{density} {kind} t = {t}: x0 {} vs {}",
                                x0[i],
                                x0_ref[i]
                            );
                            assert!(
                                (eps[i] - eps_ref[i]).abs() < tol,
                                "{density} {kind} t = {t}: eps {} vs {}",
                                eps[i],
                                eps_ref[i]
                            );
                        }
                    }
                }
            }
        }
    }
}

/// log p_t(x) of a mixture, computed directly in the test.
fn log_density(gmm: &GaussianMixture, x: &[f64], a: f64, s: f64) -> f64 {
    let total: f64 = gmm.components().iter().map(|c| c.weight).sum();
    gmm.components()
        .iter()
        .map(|c| {
            let v = a * a * c.std * c.std + s * s;
            let d2: f64 = x.iter().zip(&c.mean).map(|(xi, mi)| (xi - a * mi).powi(2)).sum();
            c.weight / total * (-d2 / (2.0 * v)).exp() / (2.0 * std::f64::consts::PI * v)
        })
        .sum::<f64>()
        .ln()
}

#[test]
fn mixture_score_is_the_gradient_of_the_log_density() {
    let gmm = GaussianMixture::checker();
    let mut post = Posterior::zeros(2);
    for (a, s) in [(1.0, 0.0), (0.95, 0.3), (0.6, 0.8), (0.05, 0.999)] {
        for x in [[0.3, -0.4], [1.1, 1.45], [-0.75, 0.25]] {
            gmm.posterior(&x, a, s, None, &mut post);
            for k in 0..2 {
                let h = 1e-5;
                let (mut up, mut down) = (x, x);
                up[k] += h;
                down[k] -= h;
                let fd = (log_density(&gmm, &up, a, s) - log_density(&gmm, &down, a, s)) / (2.0 * h);
                assert!(
                    (post.score[k] - fd).abs() < 1e-5 * (1.0 + fd.abs()),
                    "a = {a}, x = {x:?}: {} vs {fd}",
                    post.score[k]
                );
                // Tweedie: E[x₀|x] = (x + σ² ∇ log p)/α.
                if a > 0.5 {
                    let tweedie = (x[k] + s * s * fd) / a;
                    assert!((post.x0[k] - tweedie).abs() < 1e-5 * (1.0 + tweedie.abs()));
                }
            }
        }
    }
}

#[test]
fn gaussian_flow_map_is_exact_and_the_ode_agrees() {
    // The closed form (z = (x − a·mean)/√v is conserved) against the numerical PF-ODE.
    let gaussian = Gaussian::new(vec![1.0, -1.0, 0.5], vec![0.25, 1.0, 2.0]);
    let interp =
        Interpolant::Discrete(sched_runtime::interpolant::DiscreteVp::new(BetaSchedule::STABLE_DIFFUSION, 1000));
    let mut worst: f64 = 0.0;
    for (t, s) in [(1.0, 0.0), (0.8, 0.3), (0.3, 0.9), (0.5, 0.49)] {
        let from = (interp.alpha(t), interp.sigma(t));
        let to = (interp.alpha(s), interp.sigma(s));
        let x = [0.4, 2.0, -3.0];
        let exact = gaussian.transport(&x, from, to, None).expect("closed form");
        let (numeric, stats) = transport_by_ode(&gaussian, &x, from, to, None, Tolerance::TIGHT).expect("converges");
        for k in 0..3 {
            worst = worst.max((exact[k] - numeric[k]).abs());
        }
        assert!(stats.accepted < 2000, "{stats:?}");
    }
    eprintln!("Gaussian: PF-ODE vs closed form, max error {worst:e}");
    assert!(worst < 1e-8, "ODE vs closed form: {worst:e}");
}

#[test]
fn gaussian_jump_maps_noise_quantiles_to_data_quantiles() {
    let m = model("analytic:gaussian(dim=2, mean=[1,-1], std=[0.25,2], kind=flow_map, interpolant=vp_cosine)");
    // At t = 1 (α = 0 up to rounding, σ = 1), x is the noise itself: z = x, so x₀ = mean + std·x.
    let x = batch(&[[1.0, -0.5], [0.0, 2.0]]);
    let out = m.jump(&x, 1.0, 0.0, None).expect("jumps");
    assert!(max_abs_diff(&out.data, &[1.25, -2.0, 1.0, 3.0]) < 1e-6, "{:?}", out.data);
}

#[test]
fn one_component_mixture_matches_the_gaussian() {
    let gmm = GaussianMixture::new(vec![Component { weight: 1.0, mean: vec![0.7, -1.2], std: 0.1, label: None }]);
    let gaussian = Gaussian::new(vec![0.7, -1.2], vec![0.1, 0.1]);
    let interp = Interpolant::RectifiedFlow;
    let mut worst: f64 = 0.0;
    for (t, s) in [(1.0, 0.0), (0.9, 0.05), (0.2, 0.0), (0.0, 1.0)] {
        let from = (interp.alpha(t), interp.sigma(t));
        let to = (interp.alpha(s), interp.sigma(s));
        for x in [[0.3, 0.4], [-2.0, 1.5], [0.7, -1.2]] {
            let exact = gaussian.transport(&x, from, to, None).expect("closed form");
            let numeric = gmm.transport(&x, from, to, None).expect("converges");
            worst = worst.max((exact[0] - numeric[0]).abs()).max((exact[1] - numeric[1]).abs());
        }
    }
    eprintln!("one-component GMM vs Gaussian flow map, max error {worst:e}");
    assert!(worst < 1e-8, "one-component GMM flow map error {worst:e}");
}

/// The PF-ODE integrated in t with classic RK4 on the model's own velocity field: an integrator
/// and a time variable independent of the one the models use.
fn rk4_in_t(m: &dyn Model, x: &[f64], t: f64, s: f64, steps: usize) -> Vec<f64> {
    let velocity = |y: &[f64], time: f64| -> Vec<f64> {
        let input = Tensor::new(vec![1, y.len()], y.iter().map(|&v| v as f32).collect());
        let interp = &m.info().interpolant;
        // Rebuild the velocity in f64 from x̂₀ of an x0 field to avoid f32 rounding of u.
        let (x0, _) = m.field(&input, time, None).expect("evaluates");
        let (a, sg) = (interp.alpha(time), interp.sigma(time));
        y.iter()
            .zip(&x0.data)
            .map(|(&yv, &x0v)| {
                let x0v = f64::from(x0v);
                let eps = if sg > 0.0 { (yv - a * x0v) / sg } else { 0.0 };
                interp.d_alpha(time) * x0v + interp.d_sigma(time) * eps
            })
            .collect()
    };
    let h = (s - t) / steps as f64;
    let mut y = x.to_vec();
    for i in 0..steps {
        let time = t + i as f64 * h;
        let k1 = velocity(&y, time);
        let y2: Vec<f64> = y.iter().zip(&k1).map(|(a, b)| a + 0.5 * h * b).collect();
        let k2 = velocity(&y2, time + 0.5 * h);
        let y3: Vec<f64> = y.iter().zip(&k2).map(|(a, b)| a + 0.5 * h * b).collect();
        let k3 = velocity(&y3, time + 0.5 * h);
        let y4: Vec<f64> = y.iter().zip(&k3).map(|(a, b)| a + h * b).collect();
        let k4 = velocity(&y4, time + h);
        for k in 0..y.len() {
            y[k] += h / 6.0 * (k1[k] + 2.0 * k2[k] + 2.0 * k3[k] + k4[k]);
        }
    }
    y
}

#[test]
fn mixture_flow_map_agrees_with_rk4_in_t() {
    // The x0 model of the same mixture drives the reference integrator; stop at t = 0.02 so the
    // reference does not need to resolve the last, sharpest part of the trajectory.
    let map = model("analytic:gmm(preset=eight, kind=flow_map, interpolant=rectified_flow)");
    let x0_model = model("analytic:gmm(preset=eight, kind=x0, interpolant=rectified_flow)");
    let mut worst: f64 = 0.0;
    for x in [[0.5, 0.3], [-1.0, 0.8], [0.1, -1.7]] {
        let reference = rk4_in_t(x0_model.as_ref(), &x, 0.98, 0.02, 4000);
        let input = Tensor::new(vec![1, 2], x.iter().map(|&v| v as f32).collect());
        let out = map.jump(&input, 0.98, 0.02, None).expect("jumps");
        worst = worst.max(max_abs_diff(&out.data, &reference));
    }
    // The flow map is returned in f32 (relative rounding 6e-8); measured: 4.7e-8.
    eprintln!("eight-Gaussian flow map vs RK4 in t, max error {worst:e}");
    assert!(worst < 1e-6, "flow map vs RK4: {worst:e}");
}

#[test]
fn mixture_flow_map_is_invertible_and_composes() {
    let m = model("analytic:gmm(preset=checker, kind=flow_map, interpolant=rectified_flow)");
    let x = batch(&[[0.2, -0.3], [1.7, 1.1], [-0.9, 0.05]]);
    let there = m.jump(&x, 0.9, 0.1, None).expect("jumps");
    let back = m.jump(&there, 0.1, 0.9, None).expect("jumps");
    let original: Vec<f64> = x.data.iter().map(|&v| v.into()).collect();
    assert!(max_abs_diff(&back.data, &original) < 1e-5, "{:?} vs {:?}", back.data, x.data);
    let halfway = m.jump(&x, 0.9, 0.5, None).expect("jumps");
    let composed = m.jump(&halfway, 0.5, 0.1, None).expect("jumps");
    let direct: Vec<f64> = there.data.iter().map(|&v| v.into()).collect();
    assert!(max_abs_diff(&composed.data, &direct) < 1e-5);
}

#[test]
fn noise_lands_on_the_data() {
    // From pure noise to t = 0 every sample lands close to a component of the eight Gaussians.
    let m = model("analytic:gmm(preset=eight, kind=flow_map, interpolant=rectified_flow)");
    let x = batch(&[[0.3, 0.2], [-1.2, 0.4], [0.9, -1.6], [0.01, 0.02]]);
    let out = m.jump(&x, 1.0, 0.0, None).expect("jumps");
    for b in 0..out.batch() {
        let p = out.sample(b);
        let radius = f64::from(p[0]).hypot(f64::from(p[1]));
        assert!((radius - 2.0).abs() < 0.4, "sample {b} at {p:?}");
    }
}

#[test]
fn two_time_fields_are_the_velocity_and_consistency_is_the_endpoint() {
    let x = batch(&[[0.3, -0.4], [1.5, 1.2]]);
    let velocity = model("analytic:gaussian(dim=2, kind=velocity)");
    let (u, _) = velocity.field(&x, 0.6, None).expect("evaluates");
    for kind in ["flow_map", "mean_flow", "shortcut"] {
        let m = model(&format!("analytic:gaussian(dim=2, kind={kind})"));
        let (field, field_kind) = m.field(&x, 0.6, None).expect("evaluates");
        assert_eq!(field_kind, FieldKind::Velocity);
        assert_eq!(field.data, u.data, "{kind}");
    }
    let cm = model("analytic:gaussian(dim=2, kind=consistency)");
    let (f, kind) = cm.field(&x, 0.6, None).expect("evaluates");
    assert_eq!(kind, FieldKind::X0);
    assert_eq!(f.data, cm.jump(&x, 0.6, 0.0, None).expect("jumps").data);
    // Default mean (1, −1), std (0.25, 1); RF at t = 0.6: v = 0.16 std² + 0.36.
    let expected: Vec<f64> = [(0.3, 1.0, 0.25), (-0.4, -1.0, 1.0), (1.5, 1.0, 0.25), (1.2, -1.0, 1.0)]
        .iter()
        .map(|&(xv, mean, std): &(f64, f64, f64)| {
            let v: f64 = 0.16 * std * std + 0.36;
            mean + std * (xv - 0.4 * mean) / v.sqrt()
        })
        .collect();
    assert!(max_abs_diff(&f.data, &expected) < 1e-6, "{:?} vs {expected:?}", f.data);
}

#[test]
fn labels_select_the_class() {
    let m = model("analytic:gmm(preset=classes, kind=x0, interpolant=vp_cosine)");
    let x = batch(&[[0.0, 0.0]]);
    // Near pure noise, E[x₀] is the class mean: radius 1.75 along π/4 + c·π/2.
    for class in 0..4 {
        let (x0, _) = m.field(&x, 1.0, Some(class)).expect("evaluates");
        let angle = std::f64::consts::FRAC_PI_4 + class as f64 * std::f64::consts::FRAC_PI_2;
        assert!(max_abs_diff(&x0.data, &[1.75 * angle.cos(), 1.75 * angle.sin()]) < 1e-6, "class {class}");
    }
    let (unconditional, _) = m.field(&x, 1.0, None).expect("evaluates");
    assert!(max_abs_diff(&unconditional.data, &[0.0, 0.0]) < 1e-6);
}

#[test]
fn bad_inputs_are_errors() {
    let m = model("analytic:gmm(preset=classes, kind=flow_map)");
    let spec = "analytic:gmm(preset=classes, kind=flow_map)";
    let err = |e: Result<Tensor, ModelError>| match e {
        Ok(_) => panic!("no error"),
        Err(e) => e.to_string(),
    };
    let x = batch(&[[0.0, 0.0]]);
    let wrong = Tensor::new(vec![1, 3], vec![0.0; 3]);
    assert_eq!(
        err(m.field(&wrong, 0.5, None).map(|r| r.0)),
        format!("{spec}: input has shape [1, 3], but the model takes samples of shape [1, 2]")
    );
    assert_eq!(
        err(m.jump(&x, 0.5, 0.2, Some(4))),
        format!("{spec}: label 4 is out of range (the model has 4 classes)")
    );
    assert_eq!(
        err(m.jump(&x, 0.5, 0.2, Some(-1))),
        format!("{spec}: label -1 is out of range (the model has 4 classes)")
    );
    assert_eq!(err(m.jump(&x, 0.5, 1.5, None)), format!("{spec}: time 1.5 is outside [0, 1]"));
    assert_eq!(err(m.field(&x, f64::NAN, None).map(|r| r.0)), format!("{spec}: time NaN is outside [0, 1]"));
    let eps = model("analytic:gaussian(kind=eps)");
    assert_eq!(
        err(eps.jump(&x, 0.5, 0.2, None)),
        "analytic:gaussian(kind=eps): a eps model cannot jump (only two-time and consistency models are told the target time)"
    );
    assert_eq!(
        err(eps.field(&x, 0.5, Some(1)).map(|r| r.0)),
        "analytic:gaussian(kind=eps): a eps model cannot take the class label 1 (it is unconditional)"
    );
    let cm = model("analytic:gaussian(kind=consistency)");
    assert_eq!(
        err(cm.jump(&x, 0.5, 0.2, None)),
        "analytic:gaussian(kind=consistency): a consistency model cannot jump to s = 0.2 (a consistency model only jumps to data, s = 0)"
    );
}

#[test]
fn load_model_reads_analytic_specs_and_resolves_paths() {
    let m = load_model(" analytic:gmm(preset=eight, kind=eps) ", None).expect("loads");
    assert_eq!(m.info().kind, ModelKind::Eps);
    let e = load_model("analytic:gmm(preset=eigt)", None).err().expect("fails").to_string();
    assert_eq!(e, "`analytic:gmm(preset=eigt)`: `preset = eigt`: unknown preset (did you mean `eight`?)");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let e = load_model("missing/net.safetensors", Some(dir)).err().expect("fails").to_string();
    assert_eq!(e, format!("{}: no such file", dir.join("missing/net.safetensors").display()));
}
