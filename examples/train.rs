//! Trains the built-in MLP of sched on a 2-D data set and writes a checkpoint that `sched run`
//! loads (`--model net=PATH`). See `--help`, and examples/models/README.md for the shipped ones.
//!
//! ```text
//! cargo run --release --example train -- --kind velocity --data checker
//! cargo run --release --example train -- --kind flow_map --data checker     # needs the velocity model
//! cargo run --release --example train -- --all                               # all 24 into examples/models
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use sched_lang::types::ModelKind;
use sched_train::datasets::Dataset;
use sched_train::mlp::{self, KINDS, Mlp, Progress, Report, TrainConfig, TrainError};

const ABOUT: &str = "Trains sched's built-in MLP (two hidden layers, SiLU) on a 2-D data set, on the CPU, \
deterministically for a seed, and writes DIR/<data>/<kind>.safetensors with its manifest <kind>.toml.";

const LONG_ABOUT: &str = "\
Trains sched's built-in MLP (two hidden layers, SiLU) on a 2-D data set, on the CPU, deterministically for a \
seed, and writes DIR/<data>/<kind>.safetensors with its manifest <kind>.toml beside it: a checkpoint that \
`sched run --model NAME=PATH` loads.

Kinds and their objectives (time runs from noise t = 1 to data t = 0):
  velocity     flow matching on rectified_flow: x_t = (1 - t) x0 + t eps, target eps - x0
  eps          noise prediction on the discrete cosine schedule (squaredcos_cap_v2, 1000 steps)
  flow_map     distilled from the velocity model: regresses the average velocity of each jump t -> s
               on the teacher's ODE solution (Heun); one call jumps anywhere
  mean_flow    MeanFlow: u = v - (t - s) du/dt, du/dt an exact Jacobian-vector product
  shortcut     shortcut models: flow matching at step size 0, and one step of 2d = two steps of d
  consistency  distilled from the velocity model on the ve interpolant (sigma_max 80, EDM
               preconditioning): maps any noise level to the teacher's ODE endpoint

flow_map and consistency need the data set's velocity model first (by default DIR/<data>/velocity.safetensors,
or --teacher PATH).

Data sets: checker (dark squares of a 4x4 board), moons, eight (eight Gaussians at radius 2), spirals.";

const EXAMPLES: &str = "\
Examples:
  cargo run --release --example train -- --kind velocity --data checker
  cargo run --release --example train -- --kind flow_map --data checker --steps 5000 --out /tmp/models
  cargo run --release --example train -- --all
  cargo run --release -- run examples/few_step.sched --model fm=examples/models/checker/flow_map.safetensors --plot out.png";

#[derive(Parser, Debug)]
#[command(name = "train", about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
struct Args {
    /// The model kind: velocity, eps, flow_map, mean_flow, shortcut, consistency.
    #[arg(long, value_parser = parse_kind, required_unless_present = "all")]
    kind: Option<ModelKind>,
    /// The data set: checker, moons, eight, spirals.
    #[arg(long, value_parser = parse_dataset, required_unless_present = "all")]
    data: Option<Dataset>,
    /// Train every kind on every data set (teachers first), as the shipped checkpoints were.
    #[arg(long, conflicts_with_all = ["kind", "data", "teacher"])]
    all: bool,
    /// Optimizer steps [default: 20000 for velocity and eps, 12000 for mean_flow, 14000 for the others].
    #[arg(long)]
    steps: Option<usize>,
    /// The seed of every random number (weights, data, noise, times).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Rows per minibatch.
    #[arg(long, default_value_t = 512)]
    batch: usize,
    /// Units of each hidden layer.
    #[arg(long, default_value_t = 128)]
    hidden: usize,
    /// The peak learning rate (AdamW, 200 warm-up steps, cosine decay to 1 % of it)
    /// [default: 2e-2; 1e-2 for mean_flow, shortcut, consistency].
    #[arg(long)]
    lr: Option<f64>,
    /// Teacher pairs precomputed for flow_map and consistency [default: 131072 for flow_map, 65536
    /// for consistency].
    #[arg(long)]
    pool: Option<usize>,
    /// The velocity checkpoint flow_map and consistency learn from [default: OUT/<data>/velocity.safetensors].
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Where checkpoints go: OUT/<data>/<kind>.safetensors.
    #[arg(long, default_value = "examples/models")]
    out: PathBuf,
}

fn parse_kind(name: &str) -> Result<ModelKind, String> {
    ModelKind::from_name(name)
        .filter(|kind| KINDS.contains(kind))
        .ok_or_else(|| format!("expected one of {}", KINDS.map(ModelKind::name).join(", ")))
}

fn parse_dataset(name: &str) -> Result<Dataset, String> {
    Dataset::from_name(name).ok_or_else(|| format!("expected one of {}", Dataset::ALL.map(Dataset::name).join(", ")))
}

/// One trained checkpoint, for the summary.
struct Done {
    dataset: Dataset,
    kind: ModelKind,
    steps: usize,
    final_loss: f32,
    seconds: f64,
    pool_seconds: f64,
    bytes: u64,
}

fn main() {
    let args = Args::parse();
    // candle multiplies matrices on every core by default; these are small enough that threads
    // cost more than they gain (measured on two cores: 2.7 ms a step on one thread, 3.7 on two).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // SAFETY: nothing else runs yet: no thread exists that could read the environment.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", "1") };
    }
    if let Err(error) = run(&args) {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), TrainError> {
    let jobs: Vec<(Dataset, ModelKind)> = match (args.all, args.data, args.kind) {
        (true, _, _) => Dataset::ALL.iter().flat_map(|&d| KINDS.map(|k| (d, k))).collect(),
        (false, Some(data), Some(kind)) => vec![(data, kind)],
        _ => return Err(TrainError::Config("give --kind and --data, or --all".into())),
    };
    let start = Instant::now();
    let mut done = Vec::new();
    for (dataset, kind) in jobs {
        done.push(train_one(args, dataset, kind)?);
    }
    if done.len() > 1 {
        println!("\n| data | kind | steps | final loss | seconds (teacher pool) | bytes |");
        println!("|---|---|---:|---:|---:|---:|");
        for d in &done {
            println!(
                "| {} | {} | {} | {:.4} | {:.1} ({:.1}) | {} |",
                d.dataset.name(),
                d.kind.name(),
                d.steps,
                d.final_loss,
                d.seconds,
                d.pool_seconds,
                d.bytes
            );
        }
        let total: u64 = done.iter().map(|d| d.bytes).sum();
        println!("\n{} checkpoints, {total} bytes of weights, {:.0} s", done.len(), start.elapsed().as_secs_f64());
    }
    Ok(())
}

fn train_one(args: &Args, dataset: Dataset, kind: ModelKind) -> Result<Done, TrainError> {
    let mut config = TrainConfig::new(kind, dataset);
    config.steps = args.steps.unwrap_or(config.steps);
    config.seed = args.seed;
    config.batch = args.batch;
    config.hidden = args.hidden;
    config.lr = args.lr.unwrap_or(config.lr);
    config.pool = args.pool.unwrap_or(config.pool);
    let teacher = if mlp::needs_teacher(kind) {
        let path =
            args.teacher.clone().unwrap_or_else(|| mlp::checkpoint_path(&args.out, dataset, ModelKind::Velocity));
        if !path.is_file() {
            return Err(TrainError::Config(format!(
                "`{}` is distilled from the data set's velocity model, and {} does not exist: train it first \
                 (--kind velocity --data {}) or pass --teacher PATH",
                kind.name(),
                path.display(),
                dataset.name()
            )));
        }
        println!("{} on {}: teacher {}", kind.name(), dataset.name(), path.display());
        Some(Mlp::load(&path)?)
    } else {
        None
    };
    println!(
        "{} on {}: {} steps, batch {}, width {}, lr {}, seed {}",
        kind.name(),
        dataset.name(),
        config.steps,
        config.batch,
        config.hidden,
        config.lr,
        config.seed
    );
    let every = (config.steps / 10).max(1);
    let mut window: Vec<f32> = Vec::new();
    let mut report_progress = |p: &Progress| {
        window.push(p.loss);
        if p.step.is_multiple_of(every) || p.step == p.steps {
            let mean = window.iter().sum::<f32>() / window.len() as f32;
            println!("  step {:>6}/{}  loss {:.5}  lr {:.2e}  {:.1} s", p.step, p.steps, mean, p.lr, p.seconds);
            window.clear();
        }
    };
    let (mlp, report) = mlp::train(&config, teacher.as_ref(), &mut report_progress)?;
    let path = mlp::checkpoint_path(&args.out, dataset, kind);
    mlp.save(&path, &mlp::notes(&config, &report))?;
    let bytes = size(&path) + size(&path.with_extension("toml"));
    print_done(&path, &report);
    Ok(Done {
        dataset,
        kind,
        steps: config.steps,
        final_loss: report.final_loss(),
        seconds: report.seconds,
        pool_seconds: report.pool_seconds,
        bytes,
    })
}

fn print_done(path: &Path, report: &Report) {
    let pool = if report.pool_seconds > 0.0 {
        format!(" ({:.1} s of teacher pairs, {} dropped as diverged)", report.pool_seconds, report.dropped_pairs)
    } else {
        String::new()
    };
    println!(
        "  final loss {:.5} (mean of the last tenth of the steps), {:.1} s{pool}: wrote {}",
        report.final_loss(),
        report.seconds,
        path.display()
    );
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}
