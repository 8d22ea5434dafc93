//! `sched run` and `sched build` as scripts use them.

use std::path::PathBuf;
use std::process::Output;

use crate::common;

use common::{sched, text};

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sched-cli-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn json(out: &Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

#[test]
fn json_reports_model_calls_launches_and_outputs() {
    let report = json(&sched(&["run", "examples/few_step.sched", "--batch", "64", "--json"]));
    assert_eq!(report["schedule"], "few_step");
    assert_eq!(report["nfe"], 4);
    assert_eq!(report["outputs"][0]["name"], "x");
    assert_eq!(report["outputs"][0]["shape"], serde_json::json!([64, 2]));
    let report = json(&sched(&["run", "examples/ddim.sched", "--param", "steps=7", "--json"]));
    assert_eq!(report["nfe"], 7);
    // One fused kernel per DDIM step, plus the initial noise.
    assert_eq!(report["kernel_launches"], 8);
}

#[test]
fn outputs_round_trip_through_files_and_seeds_are_reproducible() {
    let npy = temp("x.npy");
    let st = temp("x.safetensors");
    let args = |out: &PathBuf| {
        vec![
            "run".to_string(),
            "examples/ddim.sched".into(),
            "--param".into(),
            "steps=5".into(),
            "--seed".into(),
            "11".into(),
            "--batch".into(),
            "8".into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let first = sched(&args(&npy).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let second = sched(&args(&st).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    let from_npy = sched::api::read_tensor(&npy).unwrap_or_else(|e| panic!("{e}"));
    let from_st = sched::api::read_tensor(&st).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(from_npy.shape, vec![8, 2]);
    assert_eq!(from_npy, from_st, "the same seed gives the same bits");

    // The written state can be fed back as the initial noise: DDIM with eta = 0 is deterministic.
    let input = format!("x={}", npy.display());
    let a = json(&sched(&[
        "run",
        "examples/ddim.sched",
        "--param",
        "steps=5",
        "--batch",
        "8",
        "--input",
        &input,
        "--json",
    ]));
    let b = json(&sched(&[
        "run",
        "examples/ddim.sched",
        "--param",
        "steps=5",
        "--batch",
        "8",
        "--input",
        &input,
        "--seed",
        "99",
        "--json",
    ]));
    assert_eq!(a["outputs"][0]["mean"], b["outputs"][0]["mean"], "eta = 0 uses no noise after the input");
    let c = json(&sched(&["run", "examples/ddim.sched", "--param", "steps=5", "--batch", "8", "--json"]));
    assert_ne!(a["outputs"][0]["mean"], c["outputs"][0]["mean"], "--input replaces the default noise");
}

#[test]
fn plots_are_png_images() {
    let png = temp("samples.png");
    let out = sched(&["run", "examples/few_step.sched", "--batch", "200", "--plot", &png.display().to_string()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let bytes = std::fs::read(&png).expect("plot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn bad_bindings_and_unsupported_schedules_fail_clearly() {
    let out = sched(&["run", "examples/ddim.sched", "--param", "steps=many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`steps` is an int, not `many`"), "{}", text(&out.stderr));
    let out = sched(&["run", "examples/ddim.sched", "--param", "stepz=3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("has no parameter `stepz`"));
    let out = sched(&["run", "examples/few_step.sched", "--model", "fm=analytic:gaussian(kind=eps)"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("sched::bind::declared_kind_differs"), "{}", text(&out.stderr));
    let out = sched(&["run", "examples/ddim.sched", "--model", "net=no/such/checkpoint.safetensors"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no/such/checkpoint.safetensors"), "{}", text(&out.stderr));
}

#[test]
fn token_schedules_run_with_prompts_and_report_tokens_per_call() {
    let json = |args: &[&str]| -> serde_json::Value {
        let out = sched(args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_str(&text(&out.stdout)).expect("--json prints JSON")
    };
    // Greedy decoding of the exact poker model writes the most likely hand, then the end token.
    let greedy =
        json(&["run", "examples/autoregressive.sched", "--schedule", "greedy_tokens", "--batch", "2", "--json"]);
    assert_eq!(greedy["outputs"][0]["text"], serde_json::json!(["high card", "high card"]));
    assert_eq!(greedy["nfe"], 3, "two words and the end token, then `ended` stops the loop");
    assert_eq!(greedy["tokens_per_model_call"], 1.0);
    // A prompt fixes the first word; the model completes the hand.
    let prompted = json(&[
        "run",
        "examples/autoregressive.sched",
        "--schedule",
        "greedy_tokens",
        "--batch",
        "1",
        "--prompt",
        "full",
        "--json",
    ]);
    assert_eq!(prompted["outputs"][0]["text"], serde_json::json!(["full house"]));
    assert_eq!(prompted["new_tokens_per_row"], 2.0, "house and the end token");
    // Speculative decoding reports each model's calls.
    let speculative = json(&["run", "examples/speculative.sched", "--batch", "4", "--json"]);
    let models = speculative["models"].as_array().expect("models");
    assert_eq!(models[0]["name"], "target");
    let (target, draft) = (models[0]["nfe"].as_u64().unwrap_or(0), models[1]["nfe"].as_u64().unwrap_or(0));
    assert_eq!(draft, 4 * target, "k = 4 draft calls per verification");
    assert_eq!(speculative["nfe"].as_u64(), Some(target + draft));
    let per_target_call = models[0]["tokens_per_call"].as_f64().unwrap_or(0.0);
    let per_row = speculative["new_tokens_per_row"].as_f64().unwrap_or(0.0);
    assert!((per_target_call - per_row / target as f64).abs() < 1e-12);
    assert!(per_target_call > 1.0, "verification accepts drafts: {per_target_call} tokens per target call");
    // Words outside the vocabulary are a usage error that lists the vocabulary.
    let out = sched(&["run", "examples/autoregressive.sched", "--prompt", "aces"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`aces` is not in the model's vocabulary (it has: <eos>, <mask>, high"));
    // A continuous model bound where tokens are generated is refused before the run.
    let out = sched(&["run", "examples/autoregressive.sched", "--model", "lm=analytic:gaussian(kind=eps)"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot be used here"), "{}", text(&out.stderr));
}

#[test]
fn build_prints_every_stage() {
    let ir = sched(&["build", "examples/ddim.sched", "--emit", "ir"]);
    assert_eq!(ir.status.code(), Some(0), "{}", text(&ir.stderr));
    assert!(text(&ir.stdout).contains("field m0"));
    assert!(text(&ir.stdout).contains("kernel k1"));
    let lowered = sched(&["build", "examples/ddim.sched", "--emit", "ir", "--stage", "lower"]);
    assert!(!text(&lowered.stdout).contains("kernel k"), "no kernels before fusion");
    let dot = sched(&["build", "examples/heun_karras.sched", "--emit", "dot"]);
    assert!(text(&dot.stdout).starts_with("digraph \"heun_karras\""));
    let kernels = sched(&["build", "examples/dpmpp_2m.sched", "--emit", "kernels"]);
    assert!(text(&kernels.stdout).contains("k0: kernel("));
    assert!(text(&kernels.stdout).contains("function u0:0(i64, i64, i64) system_v"), "each kernel's CLIF follows it");
    let ast = sched(&["build", "examples/ddim.sched", "--emit", "ast"]);
    assert!(text(&ast.stdout).contains("Refine"));
    let cuda = sched(&["build", "examples/ddim.sched", "--emit", "cuda"]);
    let cuda = text(&cuda.stdout);
    assert!(cuda.contains("sched_elementwise(") && !cuda.contains("token kernel"), "{cuda}");
    let speculative = sched(&["build", "examples/speculative.sched", "--emit", "cuda"]);
    let speculative = text(&speculative.stdout);
    assert!(speculative.contains("// propose.sample: draws the tokens"), "{speculative}");
    assert!(speculative.contains("sched_sample_rows(") && speculative.contains("sched_verify_sample("));
    let clif = sched(&["build", "examples/ddim.sched", "--emit", "clif"]);
    let golden = std::fs::read_to_string("compiler/tests/golden/ddim.clif").expect("the golden host code");
    assert_eq!(text(&clif.stdout), golden);
}

#[test]
fn both_engines_write_the_same_bytes() {
    let (jit, interp) = (temp("jit.safetensors"), temp("interp.safetensors"));
    for (engine, path) in [("jit", &jit), ("interp", &interp)] {
        let out = sched(&[
            "run",
            "examples/ddpm.sched",
            "--batch",
            "5",
            "--seed",
            "3",
            "--engine",
            engine,
            "--out",
            path.to_str().expect("a UTF-8 temp path"),
        ]);
        assert_eq!(out.status.code(), Some(0), "{engine}: {}", text(&out.stderr));
    }
    let (a, b) = (std::fs::read(&jit).expect("written"), std::fs::read(&interp).expect("written"));
    assert!(a.len() > 5 * 2 * 4, "the file holds the samples");
    assert_eq!(a, b);
    let bad = sched(&["run", "examples/ddpm.sched", "--engine", "gpu"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("jit, interp"), "{}", text(&bad.stderr));
}

/// The device path writes the CPU's bytes (the emulated device runs the reference evaluator on
/// device-style buffers) and `--json` reports what moved between the host and the device.
#[test]
fn the_device_path_writes_the_cpu_bytes_and_reports_its_transfers() {
    let (cpu, device) = (temp("cpu.safetensors"), temp("device.safetensors"));
    for (name, path) in [("cpu", &cpu), ("emulated", &device)] {
        let path = path.to_str().expect("a UTF-8 temp path");
        let out = sched(&["run", "examples/ddim.sched", "--batch", "3", "--device", name, "--out", path, "--json"]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
        let transfers = &report["transfers"];
        if name == "cpu" {
            assert_eq!(report["device"], "cpu");
            assert_eq!(transfers["uploads"], 0);
            assert_eq!(transfers["host_syncs"], 0);
        } else {
            assert_eq!(report["device"], "emulated");
            // DDIM-50 on a host model: each step copies the model's input down and its output up.
            assert_eq!(transfers["host_model_calls"], 50, "{report}");
            assert!(transfers["downloads"].as_u64().is_some_and(|d| d >= 50), "{report}");
            assert_eq!(report["launches_per_step"], 1.02, "{report}");
        }
    }
    assert_eq!(std::fs::read(&cpu).expect("written"), std::fs::read(&device).expect("written"));
}

/// `--runs N` writes the samples of N runs with consecutive seeds, one after another; on a device
/// with a device model, the runs after the first two are replays, and `--json` says so.
#[test]
fn runs_concatenate_consecutive_seeds_and_replay_on_a_device() {
    let common = ["examples/ddim.sched", "--model", "net=examples/models/eight/eps.safetensors", "--param", "steps=6"];
    let run = |extra: &[&str], out: &PathBuf| -> serde_json::Value {
        let out = out.to_str().expect("a UTF-8 temp path");
        let args: Vec<&str> = ["run"]
            .iter()
            .chain(&common)
            .chain(extra)
            .chain(&["--param", "eta=1.0", "--out", out, "--json"])
            .copied()
            .collect();
        json(&sched(&args))
    };
    let all = temp("runs.npy");
    let report = run(&["--device", "emulated", "--batch", "3", "--seed", "7", "--runs", "4"], &all);
    assert_eq!(report["runs"], 4);
    assert_eq!(report["nfe"], 6, "the counts are per run");
    assert_eq!(report["replay"]["replays"], 2, "{report}");
    assert_eq!(report["replay"]["graph"], true, "{report}");
    assert_eq!(report["replay"]["why_not"], serde_json::Value::Null, "{report}");
    assert_eq!(report["outputs"][0]["shape"], serde_json::json!([12, 2]));
    let all = sched::api::read_tensor(&all).unwrap_or_else(|e| panic!("{e}"));
    let mut expected = Vec::new();
    for seed in 7..11 {
        let one = temp(&format!("run{seed}.npy"));
        run(&["--device", "emulated", "--batch", "3", "--seed", &seed.to_string()], &one);
        expected.extend(sched::api::read_tensor(&one).unwrap_or_else(|e| panic!("{e}")).data);
    }
    assert_eq!(all.data, expected, "run k has seed 7 + k, replayed or not");

    // On the CPU nothing is replayed, and the reason says so.
    let report = run(&["--batch", "3", "--runs", "3"], &temp("cpu_runs.npy"));
    assert_eq!(report["replay"]["replays"], 0);
    assert!(report["replay"]["why_not"].as_str().is_some_and(|w| w.contains("CPU")), "{report}");
    let zero = sched(&["run", "examples/ddim.sched", "--runs", "0"]);
    assert_eq!(zero.status.code(), Some(2));
    assert!(text(&zero.stderr).contains("--runs must be at least 1"), "{}", text(&zero.stderr));
}

/// The shipped poker transformers evaluated on a device (its matrix products and layer kernels,
/// with `extend`, `candidates`, `propose` and `verify` drawing their tokens there) give the CPU's
/// tokens in every poker schedule, speculative decoding and every masked-diffusion schedule.
#[test]
fn transformer_token_schedules_give_the_cpus_tokens_on_a_device() {
    let masked = "lm=examples/models/poker/masked_lm.safetensors";
    let short = ["--param", "gen_length=8", "--param", "block=4"];
    let speculative =
        ["--model", "draft=examples/models/poker/causal_lm.safetensors", "--param", "max_tokens=6", "--param", "k=2"];
    let cases: [(&str, &str, &str, &[&str]); 8] = [
        ("poker.sched", "independent", "mtp=examples/models/poker/mtp_lm.safetensors", &[]),
        ("poker.sched", "autoregressive", "lm=examples/models/poker/causal_lm.safetensors", &[]),
        ("poker.sched", "draft_verify", "mtp=examples/models/poker/mtp_lm.safetensors", &[]),
        ("speculative.sched", "speculative", "target=examples/models/poker/causal_lm.safetensors", &speculative),
        ("mdlm.sched", "mdlm", masked, &["--param", "gen_length=6", "--param", "steps=6"]),
        ("block_diffusion.sched", "llada", masked, &short),
        ("block_diffusion.sched", "fast_dllm", masked, &short),
        ("block_diffusion.sched", "bd3lm", masked, &short),
    ];
    for (file, schedule, binding, params) in cases {
        let run = |device: &str| {
            let path = format!("examples/{file}");
            let mut args = vec!["run", &path, "--schedule", schedule, "--model", binding];
            args.extend_from_slice(params);
            args.extend_from_slice(&["--batch", "48", "--seed", "5", "--device", device, "--json"]);
            json(&sched(&args))
        };
        let (cpu, device) = (run("cpu"), run("emulated"));
        assert_eq!(device["device"], "emulated");
        assert_eq!(cpu["outputs"], device["outputs"], "{schedule}: the device's tokens differ from the CPU's");
        assert_eq!(cpu["nfe"], device["nfe"], "{schedule}");
        // Every evaluation ran on the device, none on the host, and each one's tokens came back
        // in one read (a synchronisation), without its logits.
        assert_eq!(device["transfers"]["device_model_calls"], device["nfe"], "{schedule}");
        assert_eq!(device["transfers"]["host_model_calls"], 0, "{schedule}");
        assert_eq!(device["transfers"]["host_syncs"], device["nfe"], "{schedule}");
        assert_eq!(device["transfers"]["downloads"], device["nfe"], "{schedule}");
    }
}

/// LLaDA's classifier-free guidance with the masked transformer on a device (both calls and the
/// guided combination there) gives the CPU's tokens.
#[test]
fn guided_unmasking_gives_the_cpus_tokens_on_a_device() {
    let schedule = temp("guided.sched");
    let source = "schedule guided(lm: model<masked_lm>) {\n    let seq = prompt()\n    extend seq by 6 as mask\n    \
                  for t, s in grid(1 -> 0, 3) {\n        refine seq.tail(6) from t to s by unmask(confidence, 0.7, 1.5)\n    \
                  }\n    emit seq\n}\n";
    std::fs::write(&schedule, source).expect("writes the schedule");
    let schedule = schedule.to_str().expect("a UTF-8 temp path");
    let run = |device: &str| {
        json(&sched(&[
            "run",
            schedule,
            "--model",
            "lm=examples/models/poker/masked_lm.safetensors",
            "--prompt",
            "full",
            "--batch",
            "32",
            "--seed",
            "2",
            "--device",
            device,
            "--json",
        ]))
    };
    let (cpu, device) = (run("cpu"), run("emulated"));
    assert_eq!(cpu["outputs"], device["outputs"], "the device's guided tokens differ from the CPU's");
    assert_eq!(cpu["nfe"], 6, "two calls per step");
    assert_eq!(device["transfers"]["device_model_calls"], 6);
}

/// `--device cuda` where CUDA cannot be used is a clear error, not a panic.
#[test]
fn cuda_without_a_gpu_is_a_clear_error() {
    if sched_runtime::device::cuda::CudaDevice::new(0).is_ok() {
        eprintln!("skipping cuda_without_a_gpu_is_a_clear_error: this machine has a usable GPU");
        return;
    }
    let out = sched(&["run", "examples/ddim.sched", "--device", "cuda"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("CUDA is unavailable") && stderr.contains("help:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `sched sweep` scores schedules against held-out data: on the exact model of eight Gaussians,
/// Euler with 8 steps is closer to the data than with 1, the NFE is the number of steps, and the
/// CSV and the plot are written.
#[test]
fn sweep_scores_schedules_and_writes_csv_and_plot() {
    let (csv, svg) = (temp("sweep.csv"), temp("sweep.svg"));
    let out = sched(&[
        "sweep",
        "examples/study.sched",
        "--schedule",
        "euler",
        "--data",
        "eight",
        "--param",
        "steps=1,8",
        "--samples",
        "500",
        "--seeds",
        "2",
        "--budgets",
        "1,8",
        "--out",
        csv.to_str().expect("a UTF-8 temp path"),
        "--plot",
        svg.to_str().expect("a UTF-8 temp path"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = std::fs::read_to_string(&csv).expect("the CSV is written");
    let rows: Vec<Vec<&str>> = table.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "{table}");
    let (one, eight) = (&rows[0], &rows[1]);
    assert_eq!((one[1], one[2], eight[1], eight[2]), ("steps=1", "1", "steps=8", "8"), "{table}");
    let quality = |row: &[&str]| row[5].parse::<f64>().expect("a number");
    assert!(quality(eight) < 0.5 * quality(one), "8 Euler steps beat 1: {table}");
    assert_eq!(one[7], "2", "two seeds per point");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("At most 8 NFE"), "{stdout}");
    let plot = std::fs::read_to_string(&svg).expect("the plot is written");
    assert!(plot.starts_with("<svg") && plot.contains("euler"), "the SVG names its line");
}

#[test]
fn sweep_errors_are_clear() {
    let out = sched(&["sweep", "examples/study.sched", "--data", "chekcer"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown data set `chekcer`"), "{}", text(&out.stderr));
    let bad = temp("bad.toml");
    std::fs::write(&bad, "data = \"eight\"\n[[line]]\nfile = \"x.sched\"\nstepz = 3\n").expect("written");
    let out = sched(&["sweep", bad.to_str().expect("a UTF-8 temp path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown key `stepz`"), "{}", text(&out.stderr));
}
