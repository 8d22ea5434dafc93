#!/usr/bin/env python3
"""Generates the diffusers conformance fixtures of sched (see README.md beside this file).

Run it with any Python 3.10+: it creates the virtual environment `.venv-conformance` beside itself
(git-ignored), installs the pinned torch and diffusers of requirements.txt into it, re-runs itself
inside it, and writes one JSON file per case to fixtures/.

    python3 tests/conformance/generate.py            # create the venv if needed, write fixtures
    python3 tests/conformance/generate.py --check    # regenerate in memory, fail if a file differs

Every fixture runs one diffusers scheduler against the analytic Gaussian model of sched
(`analytic:gaussian`), evaluated in float64 at exactly the noise level the scheduler's update
uses, and records the grid, the initial state, the noise and the state after every step.
"""

import json
import math
import os
import subprocess
import sys
import venv

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(HERE, ".venv-conformance")
FIXTURES = os.path.join(HERE, "fixtures")
FORMAT = "sched-conformance/1"
# The agreement a replay of a fixture in float64 must reach (its states are float32).
TOLERANCE = 1e-5

MEAN = [0.5, -1.0, 2.0, 0.0]
STD = [0.3, 1.0, 0.5, 2.0]
BATCH = 3
DIM = 4
SEED = 20260830


def ensure_venv():
    """Re-executes this script inside the pinned virtual environment, creating it if needed."""
    python = os.path.join(VENV, "bin", "python")
    if os.path.abspath(sys.prefix) == os.path.abspath(VENV):
        return
    if not os.path.exists(python):
        print(f"creating {VENV} (torch with its CUDA wheels is several GiB)", file=sys.stderr)
        venv.create(VENV, with_pip=True)
        requirements = os.path.join(HERE, "requirements.txt")
        subprocess.check_call([python, "-m", "pip", "install", "-q", "-r", requirements])
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


ensure_venv()

import diffusers  # noqa: E402  (imported inside the venv only)
import diffusers.schedulers.scheduling_ddpm as scheduling_ddpm  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import (  # noqa: E402
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)
COSINE = dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=1000)
PREDICTION = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def model_spec(kind, interpolant):
    return (
        f"analytic:gaussian(dim={DIM}, mean=[0.5,-1,2,0], std=[0.3,1,0.5,2], kind={kind}, "
        f"interpolant={interpolant})"
    )


def gaussian_output(x, a, s, kind):
    """The analytic Gaussian model's output at state x (batch x dim, float64) with x = a x0 + s eps."""
    mean = np.array(MEAN)
    var = np.array(STD) ** 2
    r = (x - a * mean) / (a * a * var + s * s)
    x0 = mean + a * var * r
    eps = s * r
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "v":
        return a * eps - s * x0
    if kind == "velocity":
        return eps - x0
    raise ValueError(kind)


def vp_of_kappa(kappa):
    """(alpha, sigma) of the VP state at noise level kappa = sigma/alpha."""
    a = 1.0 / math.sqrt(1.0 + kappa * kappa)
    return a, kappa * a


def kappa_table(alphas_cumprod):
    """kappa_n in float64 from diffusers' float32 alphas_cumprod, as sched's interpolant computes it."""
    abar = alphas_cumprod.double().numpy()
    return np.sqrt((1.0 - abar) / abar)


def t_of_kappa(kappas, kappa):
    """sched's normalized time of a noise level on a discrete table: the inverse of kappa linear in the
    table index n, with kappa = 0 at n = -1, and t = (n + 1)/N (runtime/src/interpolant.rs)."""
    n_train = len(kappas)
    if kappa <= 0.0:
        return 0.0
    if kappa <= kappas[0]:
        index = -1.0 + kappa / kappas[0]
    elif kappa >= kappas[-1]:
        index = float(n_train - 1)
    else:
        upper = int(np.searchsorted(kappas, kappa, side="left"))
        k0, k1 = kappas[upper - 1], kappas[upper]
        index = (upper - 1) + (kappa - k0) / (k1 - k0)
    return min(max((index + 1.0) / n_train, 0.0), 1.0)


def floats(array):
    """A nested list of Python floats (full precision: repr round-trips)."""
    return np.asarray(array, dtype=np.float64).tolist()


def draw(generator):
    return torch.randn((BATCH, DIM), generator=generator, dtype=torch.float32)


def interpolant_record(config):
    if config.get("beta_schedule") == "scaled_linear":
        return {
            "name": "scaled_linear",
            "beta_start": config["beta_start"],
            "beta_end": config["beta_end"],
            "train_steps": config["num_train_timesteps"],
        }
    if config.get("beta_schedule") == "squaredcos_cap_v2":
        return {"name": "squaredcos_cap_v2", "train_steps": config["num_train_timesteps"]}
    return {"name": "rectified_flow"}


def fixture(name, description, scheduler, set_timesteps, kind, sched, grid, x_init, noise, trajectory, extra):
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    interpolant = interpolant_record(config)
    return {
        "format": FORMAT,
        "name": name,
        "description": description,
        "generated_by": {
            "script": "tests/conformance/generate.py",
            "diffusers": diffusers.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "seed": SEED,
        },
        "diffusers": {
            "scheduler": type(scheduler).__name__,
            "config": json.loads(json.dumps(config, default=str)),
            "set_timesteps": set_timesteps,
            **extra,
        },
        "model": {"spec": model_spec(kind, interpolant["name"]), "kind": kind, "interpolant": interpolant},
        "sched": sched,
        "grid": grid,
        "batch": BATCH,
        "dim": DIM,
        "x_init": floats(x_init),
        "noise": floats(noise),
        "trajectory": floats(trajectory),
    }


def sched_case(file, schedule, **params):
    return {"file": f"tests/conformance/cases/{file}", "schedule": schedule, "params": params}


def discrete_grid(timesteps, n_train, pair_ends=None):
    points = [(int(k) + 1) / n_train for k in timesteps] + [0.0]
    return {"times": points, "pair_ends": pair_ends if pair_ends is not None else points[1:]}


# DDIM and DDPM: the state is the VP x; the model is evaluated at alphas_cumprod[t].


def run_ddim(name, description, config, steps, eta, kind, sched):
    scheduler = DDIMScheduler(**config, set_alpha_to_one=True, clip_sample=False, prediction_type=PREDICTION[kind])
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(SEED)
    x = draw(generator)
    x_init, noise, trajectory = x.clone(), [], []
    n_train = scheduler.config.num_train_timesteps
    stride = n_train // steps
    abar = scheduler.alphas_cumprod.double()
    for t in scheduler.timesteps:
        a = math.sqrt(abar[t].item())
        s = math.sqrt(1.0 - abar[t].item())
        out = torch.from_numpy(gaussian_output(x.double().numpy(), a, s, kind)).float()
        if eta > 0:
            z = draw(generator)
            x = scheduler.step(out, t, x, eta=eta, variance_noise=z).prev_sample
        else:
            z = torch.zeros((BATCH, DIM))
            x = scheduler.step(out, t, x, eta=eta).prev_sample
        noise.append(z)
        trajectory.append(x.clone())
    timesteps = scheduler.timesteps.tolist()
    ends = [(k - stride + 1) / n_train if k - stride >= 0 else 0.0 for k in timesteps]
    grid = discrete_grid(timesteps, n_train, ends)
    extra = {"step_kwargs": {"eta": eta}, "timesteps": timesteps, "prev_timesteps": [k - stride for k in timesteps]}
    return fixture(name, description, scheduler, {"num_inference_steps": steps}, kind, sched, grid, x_init,
                   torch.stack(noise), torch.stack(trajectory), extra)


def run_ddpm(name, description, config, steps, kind, sched):
    scheduler = DDPMScheduler(**config, variance_type="fixed_small", clip_sample=False,
                              prediction_type=PREDICTION[kind], steps_offset=1, timestep_spacing="leading")
    scheduler.set_timesteps(steps)
    generator = torch.Generator().manual_seed(SEED)
    x = draw(generator)
    x_init, noise, trajectory = x.clone(), [], []
    abar = scheduler.alphas_cumprod.double()
    drawn = []

    # DDPMScheduler draws its noise with `randn_tensor`; hand it ours and record it.
    def randn_tensor(shape, generator=None, device=None, dtype=None, **_):
        z = draw(rng)
        drawn.append(z)
        return z.to(dtype)

    rng = torch.Generator().manual_seed(SEED + 1)
    original = scheduling_ddpm.randn_tensor
    scheduling_ddpm.randn_tensor = randn_tensor
    try:
        for t in scheduler.timesteps:
            a = math.sqrt(abar[t].item())
            s = math.sqrt(1.0 - abar[t].item())
            out = torch.from_numpy(gaussian_output(x.double().numpy(), a, s, kind)).float()
            before = len(drawn)
            x = scheduler.step(out, t, x).prev_sample
            noise.append(drawn[-1] if len(drawn) > before else torch.zeros((BATCH, DIM)))
            trajectory.append(x.clone())
    finally:
        scheduling_ddpm.randn_tensor = original
    timesteps = scheduler.timesteps.tolist()
    grid = discrete_grid(timesteps, scheduler.config.num_train_timesteps)
    return fixture(name, description, scheduler, {"num_inference_steps": steps}, kind, sched, grid, x_init,
                   torch.stack(noise), torch.stack(trajectory), {"timesteps": timesteps})


# Euler, Heun and DPM-Solver: noise levels are scheduler.sigmas (kappa); Euler and Heun carry y = x/alpha.


def sigma_grid(scheduler, kappas, sigmas):
    times = [t_of_kappa(kappas, float(k)) for k in sigmas]
    return {"times": times, "pair_ends": times[1:], "kappas": [float(k) for k in sigmas]}


def run_euler_family(name, description, scheduler, set_timesteps, kind, sched, heun=False):
    scheduler.set_timesteps(**set_timesteps)
    kappas = kappa_table(scheduler.alphas_cumprod)
    generator = torch.Generator().manual_seed(SEED)
    x = draw(generator)
    sigmas = scheduler.sigmas.double()
    x_init = x.clone()
    y = x * math.sqrt(1.0 + sigmas[0].item() ** 2)
    trajectory = []
    for i, t in enumerate(scheduler.timesteps):
        index = scheduler.step_index if scheduler.step_index is not None else 0
        a, s = vp_of_kappa(sigmas[index].item())
        # The model sees scale_model_input(y) = y/sqrt(kappa^2 + 1), the VP state.
        x_model = scheduler.scale_model_input(y, t).double().numpy()
        out = torch.from_numpy(gaussian_output(x_model, a, s, kind)).float()
        y = scheduler.step(out, t, y).prev_sample
        complete = (not heun) or scheduler.state_in_first_order or i == len(scheduler.timesteps) - 1
        if complete:
            a_next, _ = vp_of_kappa(sigmas[scheduler.step_index].item())
            trajectory.append((y.double() * a_next).float())
    distinct = [sigmas[0].item()] + [sigmas[j].item() for j in range(1, len(sigmas), 2 if heun else 1)]
    grid = sigma_grid(scheduler, kappas, distinct)
    extra = {"timesteps": scheduler.timesteps.tolist(), "sigmas": scheduler.sigmas.tolist()}
    noise = torch.zeros((len(trajectory), BATCH, DIM))
    return fixture(name, description, scheduler, set_timesteps, kind, sched, grid, x_init, noise,
                   torch.stack(trajectory), extra)


def run_dpm(name, description, scheduler, set_timesteps, kind, sched):
    scheduler.set_timesteps(**set_timesteps)
    kappas = kappa_table(scheduler.alphas_cumprod)
    generator = torch.Generator().manual_seed(SEED)
    x = draw(generator)
    x_init, trajectory = x.clone(), []
    sigmas = scheduler.sigmas.double()
    for t in scheduler.timesteps:
        index = scheduler.step_index if scheduler.step_index is not None else 0
        a, s = vp_of_kappa(sigmas[index].item())
        out = torch.from_numpy(gaussian_output(x.double().numpy(), a, s, kind)).float()
        x = scheduler.step(out, t, x).prev_sample
        trajectory.append(x.clone())
    grid = sigma_grid(scheduler, kappas, [k.item() for k in sigmas])
    extra = {"timesteps": scheduler.timesteps.tolist(), "sigmas": scheduler.sigmas.tolist()}
    noise = torch.zeros((len(trajectory), BATCH, DIM))
    return fixture(name, description, scheduler, set_timesteps, kind, sched, grid, x_init, noise,
                   torch.stack(trajectory), extra)


def run_flow(name, description, shift, steps, sched):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    sigmas_in = np.linspace(1.0, 1.0 / steps, steps).tolist()
    scheduler.set_timesteps(sigmas=sigmas_in)
    generator = torch.Generator().manual_seed(SEED)
    x = draw(generator)
    x_init, trajectory = x.clone(), []
    sigmas = scheduler.sigmas.double()
    for t in scheduler.timesteps:
        index = scheduler.step_index if scheduler.step_index is not None else 0
        tau = sigmas[index].item()
        out = torch.from_numpy(gaussian_output(x.double().numpy(), 1.0 - tau, tau, "velocity")).float()
        x = scheduler.step(out, t, x).prev_sample
        trajectory.append(x.clone())
    times = [k.item() for k in sigmas]
    grid = {"times": times, "pair_ends": times[1:]}
    extra = {"timesteps": scheduler.timesteps.tolist(), "sigmas": scheduler.sigmas.tolist()}
    noise = torch.zeros((len(trajectory), BATCH, DIM))
    return fixture(name, description, scheduler, {"sigmas": sigmas_in}, "velocity", sched, grid, x_init, noise,
                   torch.stack(trajectory), extra)


def cases():
    lead = dict(SD, steps_offset=1, timestep_spacing="leading")
    trail = dict(COSINE, timestep_spacing="trailing")
    lin = dict(SD, timestep_spacing="linspace")
    yield run_ddim("ddim_eta0_leading", "DDIM, eta 0, SD's scaled_linear table, leading spacing (offset 1).",
                   lead, 10, 0.0, "eps", sched_case("ddim.sched", "ddim_leading", steps=10, eta=0.0))
    yield run_ddim("ddim_eta07_leading", "DDIM, eta 0.7 with the noise passed as variance_noise, leading.",
                   lead, 10, 0.7, "eps", sched_case("ddim.sched", "ddim_leading", steps=10, eta=0.7))
    yield run_ddim("ddim_eta0_trailing", "DDIM, eta 0, squaredcos_cap_v2 table, trailing spacing, v model.",
                   trail, 10, 0.0, "v", sched_case("ddim.sched", "ddim_trailing", steps=10, eta=0.0))
    yield run_ddim("ddim_eta07_trailing", "DDIM, eta 0.7, squaredcos_cap_v2 table, trailing spacing, v model.",
                   trail, 10, 0.7, "v", sched_case("ddim.sched", "ddim_trailing", steps=10, eta=0.7))
    yield run_ddim("ddim_linspace_stride",
                   "DDIM with linspace spacing: diffusers steps from t to t - N//n (100), not to the next "
                   "grid point (111 apart); reproduced by ddim_stride.",
                   lin, 10, 0.0, "eps", sched_case("ddim.sched", "ddim_linspace_stride", steps=10, eta=0.0))
    yield run_ddpm("ddpm_leading", "DDPM fixed_small, clip_sample off, leading spacing (offset 1).",
                   SD, 10, "eps", sched_case("ddpm.sched", "ddpm_leading", steps=10))
    yield run_euler_family(
        "euler_linspace", "Euler with diffusers' linspace spacing at 8 steps: its timesteps are NOT rounded "
        "(999, 856.29, ...), so this is sched's uniform grid 1 -> 1/N plus a last step to 0.",
        EulerDiscreteScheduler(**lin, prediction_type="epsilon"), {"num_inference_steps": 8}, "eps",
        sched_case("euler.sched", "euler_unrounded_linspace", steps=8))
    yield run_euler_family(
        "euler_karras", "Euler with use_karras_sigmas (rho 7) over the full table (linspace spacing).",
        EulerDiscreteScheduler(**lin, use_karras_sigmas=True, prediction_type="epsilon"),
        {"num_inference_steps": 10}, "eps", sched_case("euler.sched", "euler_karras", steps=10))
    yield run_euler_family(
        "heun_linspace", "Heun, linspace spacing (10 steps, 19 model calls); the state after each complete step.",
        HeunDiscreteScheduler(**lin, prediction_type="epsilon"), {"num_inference_steps": 10}, "eps",
        sched_case("heun.sched", "heun_linspace", steps=10), heun=True)
    yield run_dpm(
        "dpmpp_2m_leading", "DPM-Solver++(2M) midpoint with custom timesteps = the leading grid (offset 1).",
        DPMSolverMultistepScheduler(**SD, algorithm_type="dpmsolver++", solver_order=2, prediction_type="epsilon"),
        {"timesteps": [901, 801, 701, 601, 501, 401, 301, 201, 101, 1]}, "eps",
        sched_case("dpmpp.sched", "dpmpp_2m_leading", steps=10))
    yield run_dpm(
        "dpmpp_2m_trailing", "DPM-Solver++(2M) with custom timesteps = the trailing grid, v model.",
        DPMSolverMultistepScheduler(**SD, algorithm_type="dpmsolver++", solver_order=2,
                                    prediction_type="v_prediction"),
        {"timesteps": [999, 899, 799, 699, 599, 499, 399, 299, 199, 99]}, "v",
        sched_case("dpmpp.sched", "dpmpp_2m_trailing", steps=10))
    yield run_dpm(
        "dpmpp_2m_karras", "DPM-Solver++(2M) with use_karras_sigmas (full table), x0 (sample) model.",
        DPMSolverMultistepScheduler(**SD, algorithm_type="dpmsolver++", solver_order=2, use_karras_sigmas=True,
                                    prediction_type="sample"),
        {"num_inference_steps": 10}, "x0", sched_case("dpmpp.sched", "dpmpp_2m_karras", steps=10))
    yield run_flow("flow_euler_shift3", "FlowMatchEuler, shift 3, sigmas = linspace(1, 1/n, n) passed (one shift).",
                   3.0, 10, sched_case("flow.sched", "flow_shift", steps=10, shift=3.0))


# An independent check of every fixture: sched's prelude steps (docs/prelude.md) written in NumPy,
# in the normalized convention, on sched's interpolant, run over the fixture's grid.


class Interpolant:
    """alpha, sigma and kappa of sched's interpolant for a fixture (runtime/src/interpolant.rs)."""

    def __init__(self, record, alphas_cumprod):
        self.flow = record["name"] == "rectified_flow"
        self.kappas = None if self.flow else kappa_table(alphas_cumprod)

    def kappa(self, t):
        if self.flow:
            return t / (1.0 - t) if t < 1.0 else math.inf
        n = t * len(self.kappas) - 1.0
        table = np.concatenate([[0.0], self.kappas])
        return float(np.interp(n + 1.0, np.arange(len(table)), table))

    def alpha_sigma(self, t):
        if self.flow:
            return 1.0 - t, t
        return vp_of_kappa(self.kappa(t))


def predict(kind, x, t, interp):
    """(x0hat, epshat) from the analytic model's output, converted as sched's predict does."""
    a, s = interp.alpha_sigma(t)
    out = gaussian_output(x, a, s, kind)
    if kind == "eps":
        return (x - s * out) / a, out
    if kind == "x0":
        return out, (x - a * out) / s
    if kind == "v":
        norm = a * a + s * s
        return (a * x - s * out) / norm, (s * x + a * out) / norm
    # Rectified flow: x0 = x - t u, eps = x + (1 - t) u.
    return x - t * out, x + (1.0 - t) * out


def first_order(kind, x, t, s, interp, c, z):
    x0, eps = predict(kind, x, t, interp)
    a_s, s_s = interp.alpha_sigma(s)
    return a_s * x0 + math.sqrt(max(s_s * s_s - c * c, 0.0)) * eps + c * z


def posterior_c(t, s, interp):
    """sigma(s) sqrt(1 - e^{-2h}), h = lambda(s) - lambda(t); 0 at s = 0."""
    if s == 0.0:
        return 0.0
    ratio = interp.kappa(s) / interp.kappa(t)
    return interp.alpha_sigma(s)[1] * math.sqrt(1.0 - ratio * ratio)


def replay(record):
    """The trajectory sched's prelude step gives on the fixture's grid."""
    config = record["diffusers"]["config"]
    interpolant = record["model"]["interpolant"]
    if interpolant["name"] == "rectified_flow":
        abar = None
    else:
        abar = DDPMScheduler(
            num_train_timesteps=interpolant["train_steps"],
            beta_schedule=interpolant["name"],
            beta_start=config.get("beta_start", 0.0001),
            beta_end=config.get("beta_end", 0.02),
        ).alphas_cumprod
    interp = Interpolant(interpolant, abar)
    kind = record["model"]["kind"]
    scheduler = record["diffusers"]["scheduler"]
    eta = record["diffusers"].get("step_kwargs", {}).get("eta", 0.0)
    x = np.array(record["x_init"])
    grid = record["grid"]
    out = []
    history = None
    for i, (t, s) in enumerate(zip(grid["times"], grid["pair_ends"])):
        z = np.array(record["noise"][i])
        if scheduler == "DDIMScheduler":
            x = first_order(kind, x, t, s, interp, eta * posterior_c(t, s, interp), z)
        elif scheduler == "DDPMScheduler":
            x = first_order(kind, x, t, s, interp, posterior_c(t, s, interp), z)
        elif scheduler == "EulerDiscreteScheduler":
            x = first_order(kind, x, t, s, interp, 0.0, z)
        elif scheduler == "HeunDiscreteScheduler":
            a_t = interp.alpha_sigma(t)[0]
            k_t, k_s = interp.kappa(t), interp.kappa(s)
            y = x / a_t
            d1 = predict(kind, x, t, interp)[1]
            y_euler = y + (k_s - k_t) * d1
            if s == 0.0:
                x = y_euler
            else:
                a_s = interp.alpha_sigma(s)[0]
                d2 = predict(kind, y_euler * a_s, s, interp)[1]
                x = (y + (k_s - k_t) * (d1 + d2) / 2.0) * a_s
        elif scheduler == "DPMSolverMultistepScheduler":
            x0 = predict(kind, x, t, interp)[0]
            if s == 0.0:
                x = x0
            else:
                h = math.log(interp.kappa(t) / interp.kappa(s))
                d = x0
                if history is not None:
                    r = history[1] / h
                    d = (1.0 + 1.0 / (2.0 * r)) * x0 - 1.0 / (2.0 * r) * history[0]
                (a_t, s_t), (a_s, s_s) = interp.alpha_sigma(t), interp.alpha_sigma(s)
                x = s_s / s_t * x - a_s * math.expm1(-h) * d
                history = (x0, h)
        elif scheduler == "FlowMatchEulerDiscreteScheduler":
            a, sg = interp.alpha_sigma(t)
            x = x + (s - t) * gaussian_output(x, a, sg, "velocity")
        else:
            raise ValueError(scheduler)
        out.append(x)
    return np.array(out)


def verify(record):
    """The largest difference between the diffusers trajectory and sched's prelude replayed in float64,
    relative to the state's scale."""
    expected = np.array(record["trajectory"])
    got = replay(record)
    return float(np.max(np.abs(got - expected) / (1.0 + np.abs(expected))))


def strict_json(value):
    """The value with non-finite floats written as strings ("-Infinity"), so that the file is
    standard JSON (diffusers configs hold -inf, which Python would write as a bare -Infinity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict_json(v) for v in value]
    return value


def encode(record):
    return json.dumps(strict_json(record), indent=1, allow_nan=False) + "\n"


def main():
    check = "--check" in sys.argv[1:]
    # The Euler-family schedulers warn that a pipeline would call scale_model_input first; the
    # script does, through its own model evaluation.
    diffusers.utils.logging.set_verbosity_error()
    os.makedirs(FIXTURES, exist_ok=True)
    torch.set_num_threads(1)
    stale = []
    worst = 0.0
    for record in cases():
        path = os.path.join(FIXTURES, record["name"] + ".json")
        text = encode(record)
        error = verify(record)
        worst = max(worst, error)
        print(f"{record['name']}: sched's prelude replayed in float64 differs by {error:.2e}")
        if check:
            with open(path) as f:
                if f.read() != text:
                    stale.append(path)
        else:
            with open(path, "w") as f:
                f.write(text)
            print(f"wrote {os.path.relpath(path, HERE)} ({len(text)} bytes)")
    if worst > TOLERANCE:
        sys.exit(f"a fixture differs from sched's prelude by {worst:.2e} > {TOLERANCE:.0e}")
    if stale:
        sys.exit("out of date: " + ", ".join(stale))


if __name__ == "__main__":
    main()
