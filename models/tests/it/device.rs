//! The built-in MLP on the emulated device (host buffers, reference kernels), evaluated on device
//! tensors against the same checkpoint on the host. A GPU runs the same code with CUDA kernels
//! and cuBLAS (tests/it/cuda.rs at the root).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sched_lang::types::ModelKind;
use sched_models::load::load_model;
use sched_models::mlp::manifest::{Manifest, Preconditioning, TimeInput};
use sched_models::mlp::random::write_random_mlp;
use sched_runtime::device::emulated::EmulatedDevice;
use sched_runtime::device::{Device, DeviceTensor};
use sched_runtime::interpolant::{BetaSchedule, DiscreteVp, Interpolant};
use sched_runtime::model::Model;
use sched_runtime::tensor::Tensor;

fn dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("device").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creates the test directory");
    dir
}

fn manifest(kind: ModelKind, interpolant: Interpolant, classes: usize) -> Manifest {
    Manifest {
        kind,
        interpolant,
        time_input: TimeInput::Thousand,
        preconditioning: None,
        sample_shape: vec![2, 3],
        time_features: 4,
        classes,
    }
}

/// Writes a random MLP for `manifest` and loads it.
fn mlp(name: &str, manifest: &Manifest) -> Arc<dyn Model> {
    let path = dir(name).join("net.safetensors");
    write_random_mlp(&path, manifest, 11).expect("writes the checkpoint");
    load_model(&path.display().to_string(), None).expect("loads the checkpoint")
}

/// A batch of 5 samples of shape [2, 3].
fn input() -> Tensor {
    Tensor::new(vec![5, 2, 3], (0..30).map(|i| ((i as f32) * 0.61).sin() * 1.5).collect())
}

fn upload(device: &Arc<dyn Device>, x: &Tensor) -> DeviceTensor {
    DeviceTensor::new(x.shape.clone(), device.upload(&x.data).expect("uploads"), Arc::clone(device))
}

/// The largest difference relative to max(1, |host|); the device's matrix products sum in another
/// order, so the values agree to f32 rounding, not bit for bit.
fn max_error(host: &Tensor, device: &Arc<dyn Device>, on_device: &DeviceTensor) -> f64 {
    assert_eq!(host.shape, on_device.shape);
    let data = device.download(on_device.buffer()).expect("downloads");
    host.data.iter().zip(&data).map(|(a, b)| f64::from((a - b).abs()) / f64::from(a.abs()).max(1.0)).fold(0.0, f64::max)
}

#[test]
fn the_mlp_on_a_device_matches_the_host() {
    let device: Arc<dyn Device> = Arc::new(EmulatedDevice::new());
    let x = input();
    let on_device = upload(&device, &x);
    let discrete = Interpolant::Discrete(DiscreteVp::new(BetaSchedule::DDPM_LINEAR, 1000));
    let edm = |kind| Manifest {
        interpolant: Interpolant::Ve { sigma_max: 80.0 },
        time_input: TimeInput::EdmLogSigma,
        preconditioning: Some(Preconditioning::Edm { sigma_data: 0.5 }),
        ..manifest(kind, Interpolant::RectifiedFlow, 0)
    };
    let cases = [
        ("eps", manifest(ModelKind::Eps, discrete, 0)),
        ("velocity", manifest(ModelKind::Velocity, Interpolant::RectifiedFlow, 0)),
        ("class_velocity", manifest(ModelKind::Velocity, Interpolant::RectifiedFlow, 4)),
        ("edm_x0", edm(ModelKind::X0)),
        ("consistency", edm(ModelKind::Consistency)),
        ("flow_map", manifest(ModelKind::FlowMap, Interpolant::RectifiedFlow, 0)),
        ("mean_flow", manifest(ModelKind::MeanFlow, Interpolant::RectifiedFlow, 3)),
    ];
    for (name, manifest) in cases {
        let model = mlp(name, &manifest);
        let net = model.on_device().expect("the MLP evaluates on devices");
        let label = (manifest.classes > 0).then_some(1);
        let mut checked = 0;
        for t in [0.0, 0.3, 0.9] {
            if let Ok((host, _)) = model.field(&x, t, label) {
                let out = net.field_on(&device, &on_device, t, label).expect("the field evaluates on the device");
                let error = max_error(&host, &device, &out);
                assert!(error < 1e-5, "{name}: field at t = {t} differs by {error}");
                checked += 1;
            }
            if let Ok(host) = model.jump(&x, 0.9, t, label) {
                let out = net.jump_on(&device, &on_device, 0.9, t, label).expect("the jump evaluates on the device");
                let error = max_error(&host, &device, &out);
                assert!(error < 1e-5, "{name}: jump from 0.9 to {t} differs by {error}");
                checked += 1;
            }
        }
        assert!(checked >= 2, "{name}: only {checked} evaluations were compared");
        // Errors on the device are the host's errors.
        let host_error = model.field(&x, 1.5, label).expect_err("t = 1.5 is outside [0, 1]").to_string();
        let device_error = net.field_on(&device, &on_device, 1.5, label).expect_err("outside [0, 1]").to_string();
        assert_eq!(host_error, device_error);
    }
    drop(on_device);
    // Each model cached its weights on the device; they went with the model.
    assert_eq!(device.live_buffers(), 0, "every model was dropped, and with it its weights");
}
