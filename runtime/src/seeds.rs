//! Many runs of one schedule with different seeds, the later ones replayed from a recording.
//!
//! On a device, [`run_seeds`] records the first two runs ([`crate::device::replay`]). If both
//! recordings are the same plan, and every emitted value came from the device, the schedule's
//! device work does not depend on the seed or on the values it computes, and the remaining runs
//! replay the plan: as one graph launch each where the device has graphs (CUDA), else launch by
//! launch, in both cases without the host code, the models' host-side work or any upload. The
//! replays give the bits the runs would have given; the tests check it against plain runs.

use std::sync::Arc;

use crate::device::replay::{NotReplayable, Plan, Recorder, Replay};
use crate::device::{Device, Transfers};
use crate::run::{OutputValue, Outputs, RunError};

/// What [`run_seeds`] produced.
#[derive(Debug)]
pub struct SeedRuns {
    /// The outputs of each run, in the order of the seeds.
    pub runs: Vec<Outputs>,
    pub replay: ReplaySummary,
}

/// How the runs after the first two went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// How many runs were replays of the recorded plan.
    pub replays: usize,
    /// Whether each replay was one graph launch on the device.
    pub graph: bool,
    /// Launches and copies per replay.
    pub steps: usize,
    /// Why the runs were not replayed, when they were not.
    pub why_not: Option<String>,
}

/// The runs that [`run_seeds`] records before it replays.
const RECORDED_RUNS: usize = 2;

/// Runs a schedule once per seed with `run`, which must run it on the device it is given (`None`
/// for the CPU) with the seed it is given and the same everything else. On a device, runs after
/// the first two are replays when the schedule allows (see the module documentation).
pub fn run_seeds(
    device: Option<&Arc<dyn Device>>,
    seeds: &[u64],
    mut run: impl FnMut(Option<Arc<dyn Device>>, u64) -> Result<Outputs, RunError>,
) -> Result<SeedRuns, RunError> {
    let Some(device) = device else {
        let runs = seeds.iter().map(|&seed| run(None, seed)).collect::<Result<_, _>>()?;
        let why_not = Some("runs on the CPU replay nothing: there is no launch to save".to_string());
        return Ok(SeedRuns { runs, replay: ReplaySummary { why_not, ..ReplaySummary::default() } });
    };
    if seeds.len() <= RECORDED_RUNS {
        // Nothing would be replayed, so nothing is recorded.
        let runs = seeds.iter().map(|&seed| run(Some(Arc::clone(device)), seed)).collect::<Result<_, _>>()?;
        let why_not = format!(
            "{} runs: replays start after {RECORDED_RUNS} recorded runs, which show that the device work does not \
             depend on the seed",
            seeds.len()
        );
        return Ok(SeedRuns { runs, replay: ReplaySummary { why_not: Some(why_not), ..ReplaySummary::default() } });
    }
    let recorder = Arc::new(Recorder::new(Arc::clone(device)));
    let as_device = || -> Option<Arc<dyn Device>> { Some(Arc::clone(&recorder) as Arc<dyn Device>) };
    let mut runs = Vec::with_capacity(seeds.len());
    let mut plans = Vec::with_capacity(RECORDED_RUNS);
    for &seed in seeds.iter().take(RECORDED_RUNS) {
        runs.push(run(as_device(), seed)?);
        plans.push(Plan::new(&recorder.take(), seed));
    }
    let mut summary = ReplaySummary::default();
    let replay = match replayable(plans, &runs[RECORDED_RUNS - 1]) {
        Ok(plan) => match Replay::new(Arc::clone(device), plan, seeds[RECORDED_RUNS - 1]) {
            Ok(replay) => Some(replay),
            Err(error) => {
                summary.why_not = Some(format!("preparing the replay failed: {error}"));
                None
            }
        },
        Err(why_not) => {
            summary.why_not = Some(why_not);
            None
        }
    };
    for &seed in seeds.iter().skip(RECORDED_RUNS) {
        match &replay {
            Some(replay) => {
                let results = replay.run(seed)?;
                let template = &runs[RECORDED_RUNS - 1];
                runs.push(refilled(template, results));
            }
            None => {
                let outputs = run(as_device(), seed)?;
                // The recording of a run that is not replayed is not needed.
                recorder.take();
                runs.push(outputs);
            }
        }
    }
    if let Some(replay) = &replay {
        summary.replays = seeds.len() - RECORDED_RUNS;
        summary.graph = replay.is_graph();
        summary.steps = replay.steps();
    }
    Ok(SeedRuns { runs, replay: summary })
}

/// The plan to replay, from the recorded runs' plans and the outputs of the last of them, or why
/// there is none.
fn replayable(plans: Vec<Result<Plan, NotReplayable>>, template: &Outputs) -> Result<Plan, String> {
    let mut plans = plans.into_iter().map(|plan| plan.map_err(|e| e.to_string()));
    let (Some(first), Some(second)) = (plans.next(), plans.next()) else {
        return Err("the recorded runs are missing".into());
    };
    let (first, second) = (first?, second?);
    if first != second {
        return Err("two runs with different seeds asked the device for different work (host-side work depends on \
                    the seed)"
            .into());
    }
    if !template.trace.is_empty() || !template.token_trace.is_empty() {
        return Err("the runs are traced, and a replay records no trace".into());
    }
    if let Some((name, _)) = template.values.iter().find(|(name, value)| {
        !matches!(value, OutputValue::Tensor(_)) || !template.output_downloads.iter().any(|(n, _)| n == name)
    }) {
        return Err(format!("output `{name}` is computed on the host, which a replay does not run"));
    }
    Ok(second)
}

/// The outputs of a replay: the recorded run's (its model calls and kernel launches are the
/// replay's too), with each emitted tensor's data from the replay's result of the same download,
/// and the replay's transfers: its downloads only, and the device evaluations it repeated.
fn refilled(template: &Outputs, mut results: Vec<Vec<f32>>) -> Outputs {
    let mut outputs = template.clone();
    let download_bytes = results.iter().map(|r| 4 * r.len() as u64).sum();
    let downloads = results.len() as u64;
    for (name, download) in &template.output_downloads {
        // Each output names its own download, so its data can be moved out of the results.
        let data = usize::try_from(*download).ok().and_then(|d| results.get_mut(d)).map(std::mem::take);
        let value = outputs.values.iter_mut().find(|(n, _)| n == name);
        if let (Some(data), Some((_, OutputValue::Tensor(tensor)))) = (data, value) {
            tensor.data = data;
        }
    }
    outputs.transfers = Transfers {
        downloads,
        download_bytes,
        device_model_calls: template.transfers.device_model_calls,
        ..Transfers::default()
    };
    outputs
}
