//! MLP checkpoints: loading, the forward pass against candle computed here, and every load error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor as CTensor};
use sched_lang::types::ModelKind;
use sched_models::checkpoint::write_safetensors;
use sched_models::load::load_model;
use sched_models::mlp::manifest::{Manifest, Preconditioning, TimeInput};
use sched_models::mlp::random::{random_mlp_tensors, write_random_mlp};
use sched_runtime::interpolant::{BetaSchedule, DiscreteVp, Interpolant};
use sched_runtime::model::FieldKind;
use sched_runtime::tensor::Tensor;

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("checkpoint").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates the test directory");
    dir
}

fn manifest(kind: ModelKind, classes: usize) -> Manifest {
    Manifest {
        kind,
        interpolant: Interpolant::RectifiedFlow,
        time_input: TimeInput::Thousand,
        preconditioning: None,
        sample_shape: vec![3],
        time_features: 4,
        classes,
    }
}

fn load_error(path: &Path) -> String {
    match load_model(&path.display().to_string(), None) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    }
}

/// The MLP's forward pass written directly with candle from the file's tensors; `times` are the
/// fed time values already divided by the time input's span.
fn reference(path: &Path, x: &[f32], times: &[f64], features: usize, class: Option<u32>) -> Vec<f32> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu).expect("candle reads the file");
    let batch = x.len() / 3;
    let mut temb = Vec::new();
    for &tau in times {
        for k in 0..features {
            temb.push((std::f64::consts::PI * 2f64.powi(k as i32) * tau).sin() as f32);
        }
        for k in 0..features {
            temb.push((std::f64::consts::PI * 2f64.powi(k as i32) * tau).cos() as f32);
        }
    }
    let mut rows = Vec::new();
    for b in 0..batch {
        rows.extend_from_slice(&x[3 * b..3 * b + 3]);
        rows.extend_from_slice(&temb);
        if let Some(class) = class {
            let table = tensors["class_embed.weight"].to_vec2::<f32>().expect("2-D");
            rows.extend_from_slice(&table[class as usize]);
        }
    }
    let width = rows.len() / batch;
    let input = CTensor::from_vec(rows, (batch, width), &Device::Cpu).expect("input");
    let linear = |h: &CTensor, name: &str| -> CTensor {
        let w = &tensors[&format!("{name}.weight")];
        let b = &tensors[&format!("{name}.bias")];
        h.matmul(&w.t().expect("transpose")).expect("matmul").broadcast_add(b).expect("bias")
    };
    let h = linear(&input, "l1").silu().expect("silu");
    let h = linear(&h, "l2").silu().expect("silu");
    linear(&h, "l3").flatten_all().expect("flatten").to_vec1::<f32>().expect("values")
}

fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
}

#[test]
fn eps_mlp_matches_a_direct_candle_forward() {
    let dir = dir("eps");
    let path = dir.join("net.safetensors");
    let manifest = manifest(ModelKind::Eps, 0);
    write_random_mlp(&path, &manifest, 7).expect("writes");
    let model = load_model("net.safetensors", Some(&dir)).expect("loads");
    assert_eq!(model.info().kind, ModelKind::Eps);
    assert_eq!(model.info().sample_shape, vec![3]);
    assert_eq!(model.info().num_classes, None);
    let x = Tensor::new(vec![2, 3], vec![0.1, -0.5, 2.0, 1.0, 0.0, -1.0]);
    let (out, kind) = model.field(&x, 0.37, None).expect("evaluates");
    assert_eq!(kind, FieldKind::Eps);
    let expected = reference(&path, &x.data, &[0.37], 4, None);
    assert!(close(&out.data, &expected), "{:?} vs {expected:?}", out.data);
    // A different time gives a different output: the time features reach the network.
    let (other, _) = model.field(&x, 0.9, None).expect("evaluates");
    assert!(!close(&other.data, &out.data));
}

#[test]
fn class_conditional_mean_flow_from_metadata() {
    // The manifest lives in `__metadata__`; no TOML file.
    let dir = dir("mean_flow");
    let path = dir.join("mf.safetensors");
    let mut manifest = manifest(ModelKind::MeanFlow, 3);
    manifest.time_input = TimeInput::T;
    write_safetensors(&path, &random_mlp_tensors(&manifest, 11), Some(manifest.to_metadata())).expect("writes");
    let model = load_model(&path.display().to_string(), None).expect("loads");
    assert_eq!(model.info().num_classes, Some(3));
    let x = Tensor::new(vec![1, 3], vec![0.3, 0.2, -0.1]);
    // The field is the average velocity at s = t (gap 0); labels pick a row, None the null row 3.
    let (u, kind) = model.field(&x, 0.6, Some(1)).expect("evaluates");
    assert_eq!(kind, FieldKind::Velocity);
    assert!(close(&u.data, &reference(&path, &x.data, &[0.6, 0.0], 4, Some(1))));
    let (null, _) = model.field(&x, 0.6, None).expect("evaluates");
    assert!(close(&null.data, &reference(&path, &x.data, &[0.6, 0.0], 4, Some(3))));
    // jump: x_s = x_t + (s − t) u(x, t, gap t − s).
    let out = model.jump(&x, 0.6, 0.2, Some(2)).expect("jumps");
    let u = reference(&path, &x.data, &[0.6, 0.4], 4, Some(2));
    let expected: Vec<f32> = x.data.iter().zip(&u).map(|(xv, uv)| xv - 0.4 * uv).collect();
    assert!(close(&out.data, &expected), "{:?} vs {expected:?}", out.data);
    let err = model.field(&x, 0.6, Some(3)).expect_err("fails").to_string();
    assert_eq!(err, format!("{}: label 3 is out of range (the model has 3 classes)", path.display()));
}

#[test]
fn flow_map_feeds_the_target_time_and_consistency_jumps_to_data() {
    let dir = dir("flow_map");
    let path = dir.join("fm.safetensors");
    let mut fm = manifest(ModelKind::FlowMap, 0);
    fm.interpolant = Interpolant::Discrete(DiscreteVp::new(BetaSchedule::STABLE_DIFFUSION, 1000));
    fm.time_input = TimeInput::Index;
    write_random_mlp(&path, &fm, 3).expect("writes");
    let model = load_model(&path.display().to_string(), None).expect("loads");
    assert_eq!(model.info().interpolant.name(), "scaled_linear");
    let x = Tensor::new(vec![1, 3], vec![1.0, -1.0, 0.5]);
    let out = model.jump(&x, 0.8, 0.3, None).expect("jumps");
    // Index times 0.8·1000 − 1 = 799 and 0.3·1000 − 1 = 299, divided by the span N = 1000.
    let u = reference(&path, &x.data, &[0.799, 0.299], 4, None);
    let expected: Vec<f32> = x.data.iter().zip(&u).map(|(xv, uv)| xv - 0.5 * uv).collect();
    assert!(close(&out.data, &expected));

    let cm_path = dir.join("cm.safetensors");
    let mut cm = manifest(ModelKind::Consistency, 0);
    cm.time_input = TimeInput::OneMinusT;
    write_random_mlp(&cm_path, &cm, 5).expect("writes");
    let model = load_model(&cm_path.display().to_string(), None).expect("loads");
    let (f, kind) = model.field(&x, 0.25, None).expect("evaluates");
    assert_eq!(kind, FieldKind::X0);
    assert!(close(&f.data, &reference(&cm_path, &x.data, &[0.75], 4, None)));
    assert_eq!(model.jump(&x, 0.25, 0.0, None).expect("jumps").data, f.data);
    let err = model.jump(&x, 0.25, 0.1, None).expect_err("fails").to_string();
    assert_eq!(
        err,
        format!(
            "{}: a consistency model cannot jump to s = 0.1 (a consistency model only jumps to data, s = 0)",
            cm_path.display()
        )
    );
}

#[test]
fn file_errors() {
    let dir = dir("files");
    let missing = dir.join("absent.safetensors");
    assert_eq!(load_error(&missing), format!("{}: no such file", missing.display()));

    let text = dir.join("text.safetensors");
    std::fs::write(&text, "this is not a checkpoint at all").expect("writes");
    assert_eq!(
        load_error(&text),
        format!("{}: not a safetensors file (the first 8 bytes are not a plausible header length)", text.display())
    );

    let tiny = dir.join("tiny.safetensors");
    std::fs::write(&tiny, [1u8, 2, 3]).expect("writes");
    assert_eq!(
        load_error(&tiny),
        format!("{}: not a safetensors file (3 bytes is shorter than the 8-byte header length)", tiny.display())
    );

    let good = dir.join("good.safetensors");
    write_random_mlp(&good, &manifest(ModelKind::Eps, 0), 1).expect("writes");
    let bytes = std::fs::read(&good).expect("reads");
    let cut_data = dir.join("cut_data.safetensors");
    std::fs::write(&cut_data, &bytes[..bytes.len() - 10]).expect("writes");
    std::fs::copy(good.with_extension("toml"), cut_data.with_extension("toml")).expect("copies");
    assert_eq!(
        load_error(&cut_data),
        format!(
            "{}: the file is truncated ({} bytes; the header describes more tensor data than the file holds)",
            cut_data.display(),
            bytes.len() - 10
        )
    );
    let cut_header = dir.join("cut_header.safetensors");
    std::fs::write(&cut_header, &bytes[..40]).expect("writes");
    assert_eq!(
        load_error(&cut_header),
        format!("{}: the file is truncated (40 bytes; the header is cut off)", cut_header.display())
    );

    let no_manifest = dir.join("bare.safetensors");
    write_safetensors(&no_manifest, &random_mlp_tensors(&manifest(ModelKind::Eps, 0), 1), None).expect("writes");
    assert_eq!(
        load_error(&no_manifest),
        format!(
            "{}: no manifest: neither {} exists nor does the file's `__metadata__` have an `architecture` entry (see docs/models.md)",
            no_manifest.display(),
            no_manifest.with_extension("toml").display()
        )
    );
}

/// Writes a good checkpoint whose TOML manifest is `edit`ed, and returns the error and the
/// manifest's path.
fn manifest_error(name: &str, edit: impl FnOnce(&mut toml::Table)) -> (String, PathBuf) {
    let dir = dir(name);
    let path = dir.join("net.safetensors");
    let manifest = manifest(ModelKind::Eps, 0);
    write_safetensors(&path, &random_mlp_tensors(&manifest, 2), None).expect("writes");
    let mut table = manifest.to_table();
    edit(&mut table);
    let toml_path = path.with_extension("toml");
    std::fs::write(&toml_path, table.to_string()).expect("writes");
    (load_error(&path), toml_path)
}

#[test]
fn manifest_errors() {
    let (e, m) = manifest_error("no_kind", |t| {
        t.remove("kind");
    });
    assert_eq!(e, format!("{}: the field `kind` is missing (the model kind, e.g. \"eps\")", m.display()));
    let (e, m) = manifest_error("no_shape", |t| {
        t.remove("sample_shape");
    });
    assert_eq!(e, format!("{}: the field `sample_shape` is missing (an array of dimensions, e.g. [2])", m.display()));
    let (e, m) = manifest_error("arch", |t| {
        t.insert("architecture".into(), "mpl".into());
    });
    assert_eq!(e, format!("{}: `architecture = \"mpl\"`: unknown architecture (did you mean `mlp`?)", m.display()));
    let (e, m) = manifest_error("kind", |t| {
        t.insert("kind".into(), "esp".into());
    });
    assert_eq!(e, format!("{}: `kind = esp`: unknown kind (did you mean `eps`?)", m.display()));
    let (e, m) = manifest_error("interp", |t| {
        t.insert("interpolant".into(), "scaled_linaer".into());
    });
    assert_eq!(
        e,
        format!("{}: `interpolant = scaled_linaer`: unknown interpolant (did you mean `scaled_linear`?)", m.display())
    );
    let (e, m) = manifest_error("time", |t| {
        t.insert("time_input".into(), "index".into());
    });
    assert_eq!(
        e,
        format!(
            "{}: `time_input = \"index\"`: `index` needs a discrete interpolant (linear, scaled_linear, squaredcos_cap_v2)",
            m.display()
        )
    );
    let (e, m) = manifest_error("unknown_field", |t| {
        t.insert("time_feature".into(), 4.into());
    });
    assert_eq!(e, format!("{}: `time_feature = 4`: unknown field (did you mean `time_features`?)", m.display()));
    let (e, m) = manifest_error("type", |t| {
        t.insert("time_features".into(), "four".into());
    });
    assert_eq!(e, format!("{}: `time_features = \"four\"`: expected a non-negative integer", m.display()));
    let (e, m) = manifest_error("token", |t| {
        t.insert("kind".into(), "causal_lm".into());
    });
    assert_eq!(
        e,
        format!(
            "{}: `kind = causal_lm`: an MLP checkpoint is a continuous model; token models are transformer checkpoints (`architecture = \"transformer\"`, docs/models.md)",
            m.display()
        )
    );
}

/// Writes the random tensors after `edit` with a correct TOML manifest and returns the error.
fn tensor_error(name: &str, edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) -> (String, PathBuf) {
    let dir = dir(name);
    let path = dir.join("net.safetensors");
    let manifest = manifest(ModelKind::Eps, 2);
    write_random_mlp(&path, &manifest, 4).expect("writes");
    let mut tensors = random_mlp_tensors(&manifest, 4);
    edit(&mut tensors);
    write_safetensors(&path, &tensors, None).expect("writes");
    (load_error(&path), path)
}

#[test]
fn tensor_errors() {
    // Inputs of l1: 3 sample values + 8 time features + 8 class-embedding values = 19.
    let (e, p) = tensor_error("missing", |t| t.retain(|(name, _, _)| name != "l2.bias"));
    assert_eq!(e, format!("{}: tensor `l2.bias` is missing (expected shape [32])", p.display()));
    let (e, p) = tensor_error("missing_embed", |t| t.retain(|(name, _, _)| name != "class_embed.weight"));
    assert_eq!(e, format!("{}: tensor `class_embed.weight` is missing (expected shape [3, _])", p.display()));
    let (e, p) = tensor_error("shape", |t| {
        let l1 = t.iter_mut().find(|(name, _, _)| name == "l1.weight").expect("present");
        l1.1 = vec![32, 18];
        l1.2.truncate(32 * 18);
    });
    assert_eq!(e, format!("{}: tensor `l1.weight` has shape [32, 18], expected [_, 19]", p.display()));
    let (e, p) = tensor_error("out", |t| {
        let l3 = t.iter_mut().find(|(name, _, _)| name == "l3.weight").expect("present");
        l3.1 = vec![4, 8];
        l3.2 = vec![0.0; 32];
    });
    assert_eq!(e, format!("{}: tensor `l3.weight` has shape [4, 8], expected [3, 32]", p.display()));

    // A dtype error needs a non-F32 tensor, written with safetensors directly.
    let dir = dir("dtype");
    let path = dir.join("net.safetensors");
    let manifest = manifest(ModelKind::Eps, 0);
    write_random_mlp(&path, &manifest, 4).expect("writes");
    let tensors = random_mlp_tensors(&manifest, 4);
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(name, _, values)| {
            if name == "l2.weight" {
                values.iter().flat_map(|v| f64::from(*v).to_le_bytes()).collect()
            } else {
                values.iter().flat_map(|v| v.to_le_bytes()).collect()
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), data)| {
            let dtype = if name == "l2.weight" { safetensors::Dtype::F64 } else { safetensors::Dtype::F32 };
            (name.clone(), safetensors::tensor::TensorView::new(dtype, shape.clone(), data).expect("view"))
        })
        .collect();
    let buffer = safetensors::serialize(views, None::<HashMap<String, String>>).expect("serializes");
    std::fs::write(&path, buffer).expect("writes");
    assert_eq!(load_error(&path), format!("{}: tensor `l2.weight` has dtype F64, expected F32", path.display()));
}

/// An EDM-preconditioned model on `ve(sigma_max = 80)`.
fn edm_manifest(kind: ModelKind, time_input: TimeInput, sigma_data: f64) -> Manifest {
    Manifest {
        interpolant: Interpolant::Ve { sigma_max: 80.0 },
        time_input,
        preconditioning: Some(Preconditioning::Edm { sigma_data }),
        ..manifest(kind, 0)
    }
}

/// `c_skip x + c_out F(c_in x, τ)` with F computed by [`reference`]; `tau` is the fed time value
/// already divided by its span.
fn preconditioned(path: &Path, x: &[f32], tau: f64, (c_in, c_skip, c_out): (f64, f64, f64)) -> Vec<f32> {
    let scaled: Vec<f32> = x.iter().map(|&v| (c_in * f64::from(v)) as f32).collect();
    let f = reference(path, &scaled, &[tau], 4, None);
    x.iter().zip(&f).map(|(&xv, &fv)| (c_skip * f64::from(xv) + c_out * f64::from(fv)) as f32).collect()
}

#[test]
fn edm_x0_is_the_preconditioned_denoiser() {
    let dir = dir("edm_x0");
    let path = dir.join("edm.safetensors");
    let manifest = edm_manifest(ModelKind::X0, TimeInput::EdmLogSigma, 0.5);
    write_random_mlp(&path, &manifest, 21).expect("writes");
    let model = load_model(&path.display().to_string(), None).expect("loads");
    let x = Tensor::new(vec![2, 3], vec![3.0, -12.5, 40.0, 0.25, 7.0, -60.0]);
    let sd = 0.5f64;
    for t in [0.001, 0.05, 0.3, 0.77, 1.0] {
        let kappa = 80.0 * t;
        let norm = (kappa * kappa + sd * sd).sqrt();
        let coefficients = (1.0 / norm, sd * sd / (kappa * kappa + sd * sd), kappa * sd / norm);
        // edm_log_sigma feeds ln(κ)/4, divided by its span 2.
        let expected = preconditioned(&path, &x.data, f64::ln(kappa) / 4.0 / 2.0, coefficients);
        let (out, kind) = model.field(&x, t, None).expect("evaluates");
        assert_eq!(kind, FieldKind::X0);
        assert!(close(&out.data, &expected), "t = {t}: {:?} vs {expected:?}", out.data);
    }
    // At κ = 0, c_skip = 1 and c_out = 0: the denoiser returns x without the network (whose
    // ln κ would be −∞).
    let (at_zero, _) = model.field(&x, 0.0, None).expect("evaluates at t = 0");
    assert_eq!(at_zero.data, x.data);
    // An x0 model does not jump.
    let err = model.jump(&x, 0.5, 0.0, None).expect_err("fails").to_string();
    assert_eq!(
        err,
        format!(
            "{}: a x0 model cannot jump (only two-time and consistency models are told the target time)",
            path.display()
        )
    );
}

#[test]
fn edm_manifest_round_trips_through_toml_and_metadata() {
    let manifest = edm_manifest(ModelKind::X0, TimeInput::T, 1.25);
    let table = manifest.to_table();
    assert_eq!(table["preconditioning"].as_str(), Some("edm"));
    assert_eq!(table["sigma_data"].as_float(), Some(1.25));
    assert_eq!(Manifest::from_table(&table, "m", true).expect("reads"), manifest);
    // Without `sigma_data`, σ_d is 0.5.
    let mut table = table;
    table.remove("sigma_data");
    let read = Manifest::from_table(&table, "m", true).expect("reads");
    assert_eq!(read.preconditioning, Some(Preconditioning::Edm { sigma_data: 0.5 }));

    // From `__metadata__`, with σ_d = 1.25 and the plain time input t reaching the network.
    let dir = dir("edm_metadata");
    let path = dir.join("edm.safetensors");
    write_safetensors(&path, &random_mlp_tensors(&manifest, 9), Some(manifest.to_metadata())).expect("writes");
    let model = load_model(&path.display().to_string(), None).expect("loads");
    let x = Tensor::new(vec![1, 3], vec![1.5, -0.5, 20.0]);
    let sd = 1.25f64;
    for t in [0.02, 0.4, 0.9] {
        let kappa = 80.0 * t;
        let norm = (kappa * kappa + sd * sd).sqrt();
        let coefficients = (1.0 / norm, sd * sd / (kappa * kappa + sd * sd), kappa * sd / norm);
        let expected = preconditioned(&path, &x.data, t, coefficients);
        let (out, _) = model.field(&x, t, None).expect("evaluates");
        assert!(close(&out.data, &expected), "t = {t}: {:?} vs {expected:?}", out.data);
    }
}

#[test]
fn edm_consistency_keeps_the_boundary_condition() {
    let dir = dir("edm_consistency");
    let path = dir.join("cm.safetensors");
    let manifest = edm_manifest(ModelKind::Consistency, TimeInput::EdmLogSigma, 0.5);
    write_random_mlp(&path, &manifest, 33).expect("writes");
    let model = load_model(&path.display().to_string(), None).expect("loads");
    let x = Tensor::new(vec![2, 3], vec![0.7, -1.9, 2.4, -0.01, 0.3, 1.1]);
    let kappa_min = 0.002;
    // At κ = κ_min (t = κ_min / σ_max) the model is the identity: f(x, κ_min) = x.
    let (f, kind) = model.field(&x, kappa_min / 80.0, None).expect("evaluates");
    assert_eq!(kind, FieldKind::X0);
    assert!(f.data.iter().zip(&x.data).all(|(a, b)| (a - b).abs() <= 1e-6), "{:?} vs {:?}", f.data, x.data);
    // Below κ_min the state counts as data as well.
    assert_eq!(model.field(&x, 0.0, None).expect("evaluates").0.data, x.data);
    // Elsewhere the boundary form: κ − κ_min in c_skip and in c_out's numerator.
    let sd = 0.5f64;
    for t in [0.001, 0.25, 1.0] {
        let kappa = 80.0 * t;
        let shifted = kappa - kappa_min;
        let norm = (kappa * kappa + sd * sd).sqrt();
        let coefficients = (1.0 / norm, sd * sd / (shifted * shifted + sd * sd), shifted * sd / norm);
        let expected = preconditioned(&path, &x.data, f64::ln(kappa) / 4.0 / 2.0, coefficients);
        let (out, _) = model.field(&x, t, None).expect("evaluates");
        assert!(close(&out.data, &expected), "t = {t}: {:?} vs {expected:?}", out.data);
        // Its jump to data is the same output.
        assert_eq!(model.jump(&x, t, 0.0, None).expect("jumps").data, out.data);
    }
}

#[test]
fn edm_log_sigma_without_preconditioning() {
    let dir = dir("edm_log_sigma");
    let path = dir.join("eps.safetensors");
    let manifest = Manifest {
        interpolant: Interpolant::Ve { sigma_max: 80.0 },
        time_input: TimeInput::EdmLogSigma,
        ..manifest(ModelKind::Eps, 0)
    };
    write_random_mlp(&path, &manifest, 8).expect("writes");
    let model = load_model(&path.display().to_string(), None).expect("loads");
    let x = Tensor::new(vec![1, 3], vec![0.5, 4.0, -3.0]);
    let (out, kind) = model.field(&x, 0.6, None).expect("evaluates");
    assert_eq!(kind, FieldKind::Eps);
    assert!(close(&out.data, &reference(&path, &x.data, &[f64::ln(48.0) / 8.0], 4, None)));
    let err = model.field(&x, 0.0, None).expect_err("fails").to_string();
    assert_eq!(
        err,
        format!(
            "{}: a eps model cannot evaluate its network at t = 0: the time input `edm_log_sigma` is -inf there",
            path.display()
        )
    );
}

#[test]
fn edm_manifest_errors() {
    let ve = |t: &mut toml::Table| {
        t.insert("interpolant".into(), "ve".into());
        t.insert("kind".into(), "x0".into());
    };
    let (e, m) = manifest_error("edm_unknown", |t| {
        ve(t);
        t.insert("preconditioning".into(), "edn".into());
    });
    assert_eq!(
        e,
        format!("{}: `preconditioning = \"edn\"`: unknown preconditioning (did you mean `edm`?)", m.display())
    );
    let (e, m) = manifest_error("edm_interpolant", |t| {
        t.insert("kind".into(), "x0".into());
        t.insert("preconditioning".into(), "edm".into());
    });
    assert_eq!(
        e,
        format!(
            "{}: `preconditioning = \"edm\"`: EDM preconditioning needs the `ve` interpolant (α = 1, σ = σ_max t), not `rectified_flow`",
            m.display()
        )
    );
    // With trigflow, `sigma_data` would be ambiguous; the preconditioning is refused all the same.
    let (e, m) = manifest_error("edm_trigflow", |t| {
        t.insert("kind".into(), "x0".into());
        t.insert("interpolant".into(), "trigflow".into());
        t.insert("preconditioning".into(), "edm".into());
        t.insert("sigma_data".into(), 0.5.into());
    });
    assert_eq!(
        e,
        format!(
            "{}: `preconditioning = \"edm\"`: EDM preconditioning needs the `ve` interpolant (α = 1, σ = σ_max t), not `trigflow`",
            m.display()
        )
    );
    let (e, m) = manifest_error("edm_kind", |t| {
        ve(t);
        t.insert("kind".into(), "eps".into());
        t.insert("preconditioning".into(), "edm".into());
    });
    assert_eq!(
        e,
        format!(
            "{}: `preconditioning = \"edm\"`: applies to the kinds x0 and consistency only, not `eps`",
            m.display()
        )
    );
    let (e, m) = manifest_error("edm_sigma_data", |t| {
        ve(t);
        t.insert("preconditioning".into(), "edm".into());
        t.insert("sigma_data".into(), (-1).into());
    });
    assert_eq!(e, format!("{}: `sigma_data = -1`: expected a positive number", m.display()));
    let (e, m) = manifest_error("edm_no_preconditioning", |t| {
        ve(t);
        t.insert("sigma_data".into(), 0.5.into());
    });
    assert_eq!(
        e,
        format!(
            "{}: `sigma_data = 0.5`: applies to the `trigflow` interpolant and to `preconditioning = \"edm\"`, and this manifest has neither",
            m.display()
        )
    );
    let (e, m) = manifest_error("edm_time_interpolant", |t| {
        t.insert("time_input".into(), "edm_log_sigma".into());
    });
    assert_eq!(
        e,
        format!(
            "{}: `time_input = \"edm_log_sigma\"`: `edm_log_sigma` needs the `ve` interpolant (κ = σ_max t), not `rectified_flow`",
            m.display()
        )
    );
    let (e, m) = manifest_error("edm_time_two_time", |t| {
        ve(t);
        t.insert("kind".into(), "mean_flow".into());
        t.insert("time_input".into(), "edm_log_sigma".into());
    });
    assert_eq!(
        e,
        format!(
            "{}: `time_input = \"edm_log_sigma\"`: `edm_log_sigma` feeds one noise level, so a two-time kind (`mean_flow`) cannot use it",
            m.display()
        )
    );
}
