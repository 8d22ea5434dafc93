#!/usr/bin/env python3
"""End-to-end DDIM with diffusers and torch: the reference for benchmark (c) of bench/run.sh (CPU)
and of benches/gpu.rs (`--device cuda`, run by bench/gpu.sh).

It reads what the Rust side of the benchmark wrote into DIR (`cargo bench --bench engine -- e2e`):

- `mlp.safetensors` and its manifest `mlp.toml`: sched's built-in MLP (docs/models.md), an
  epsilon-prediction model on diffusers' default `linear` table fed the integer timestep
  (`time_input = "index"`);
- `x_init.safetensors`: the initial noise `x` (batch x sample);
- `samples.safetensors`: the samples sched's engines and the hand-written candle loop produced.

It builds the same MLP in torch from the same weights, runs `DDIMScheduler` (defaults, with
`clip_sample = False`: linear betas, `leading` spacing with `steps_offset = 0`, `set_alpha_to_one`,
eta = 0) for `--steps` steps from the same initial noise, and reports the loop's wall time (the best
of `--rounds` runs; on CUDA after a synchronisation) and the largest absolute difference between its
samples and sched's samples (the `jit` entry).

Output: one line per result on stdout, `key<TAB>value<TAB>unit`; progress goes to stderr.
"""

import argparse
import math
import os
import sys
import time
import tomllib

import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file


class Mlp(torch.nn.Module):
    """sched's checkpoint MLP: concat(x, temb(tau)) -> l1 -> SiLU -> l2 -> SiLU -> l3."""

    def __init__(self, tensors, manifest):
        super().__init__()
        self.features = manifest["time_features"]
        self.train_steps = manifest["train_steps"]
        self.layers = torch.nn.ModuleList()
        for name in ("l1", "l2", "l3"):
            weight = tensors[f"{name}.weight"]
            layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
            with torch.no_grad():
                layer.weight.copy_(weight)
                layer.bias.copy_(tensors[f"{name}.bias"])
            self.layers.append(layer)

    def embedding(self, timestep, device):
        """The sinusoidal features of the timestep divided by N, in float64 rounded to float32, as
        the Rust runtime computes them (runtime/src/checkpoint.rs, `time_embedding`)."""
        tau = float(timestep) / self.train_steps
        angles = [math.pi * 2.0**k * tau for k in range(self.features)]
        features = [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
        return torch.tensor(features, dtype=torch.float32, device=device)

    def forward(self, x, timestep):
        temb = self.embedding(timestep, x.device).expand(x.shape[0], -1)
        h = torch.cat([x.reshape(x.shape[0], -1), temb], dim=1)
        h = torch.nn.functional.silu(self.layers[0](h))
        h = torch.nn.functional.silu(self.layers[1](h))
        return self.layers[2](h).reshape(x.shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="the directory the Rust benchmark wrote")
    parser.add_argument("--steps", type=int, default=50, help="DDIM steps (default 50)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs; the best counts (default 3)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    parser.add_argument("--prefix", default="e2e", help="prefix of the result keys (default e2e)")
    args = parser.parse_args()

    with open(os.path.join(args.dir, "mlp.toml"), "rb") as f:
        manifest = tomllib.load(f)
    expected = {"kind": "eps", "interpolant": "linear", "time_input": "index"}
    for key, value in expected.items():
        if manifest.get(key) != value:
            sys.exit(f"{args.dir}/mlp.toml: expected {key} = {value!r}, found {manifest.get(key)!r}")
    device = torch.device(args.device)
    net = Mlp(load_file(os.path.join(args.dir, "mlp.safetensors")), manifest).to(device)
    x_init = load_file(os.path.join(args.dir, "x_init.safetensors"))["x"].to(device)
    ours = load_file(os.path.join(args.dir, "samples.safetensors"))

    scheduler = DDIMScheduler(
        num_train_timesteps=manifest["train_steps"],
        beta_start=manifest["beta_start"],
        beta_end=manifest["beta_end"],
        beta_schedule="linear",
        clip_sample=False,
    )
    scheduler.set_timesteps(args.steps)

    def sample(x):
        for t in scheduler.timesteps:
            eps = net(x, t)
            x = scheduler.step(eps, t, x).prev_sample
        if device.type == "cuda":
            torch.cuda.synchronize()
        return x

    with torch.inference_mode():
        sample(x_init[:256].clone())  # Warms up torch's thread pool and allocator, as the Rust side does.
        elapsed_ms = float("inf")
        for _ in range(max(args.rounds, 1)):
            began = time.perf_counter()
            x = sample(x_init.clone())
            elapsed_ms = min(elapsed_ms, (time.perf_counter() - began) * 1e3)

    reference = ours["jit"]
    max_diff = (x.cpu() - reference).abs().max().item()
    scale = reference.abs().max().item()
    print(
        f"diffusers + torch on {args.device}, DDIM-{args.steps}, batch {x.shape[0]}: {elapsed_ms:.0f} ms "
        f"({torch.get_num_threads()} threads); max |diffusers - sched| = {max_diff:.3g} (max |x| = {scale:.3g})",
        file=sys.stderr,
    )
    print(f"{args.prefix}.diffusers\t{elapsed_ms:.6g}\tms")
    print(f"{args.prefix}.diffusers.maxdiff\t{max_diff:.3g}\tabs")


if __name__ == "__main__":
    main()
