#!/usr/bin/env python3
"""Host overhead of diffusers' DDIMScheduler.step: the reference for benchmark (a) of bench/run.sh.

It times the loop `sample = scheduler.step(zeros, t, sample).prev_sample` over the 1000 timesteps of
`set_timesteps(1000)` on a torch CPU tensor of shape 1 x 2, with a zero model output: no network
runs, so what is measured is the scheduler's own per-step cost (its tensor arithmetic, Python and
torch dispatch). The scheduler is DDIMScheduler's defaults (linear betas 0.0001 -> 0.02, N = 1000,
`leading` spacing with `steps_offset = 0`, `set_alpha_to_one`) with `clip_sample = False`, which is
what sched's `ddim` step computes; `eta = 0`.

Output: one line per result on stdout, `key<TAB>value<TAB>unit` (bench/run.sh collects them);
progress goes to stderr.
"""

import argparse
import sys
import time

import torch
from diffusers import DDIMScheduler


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="DDIM steps (default 1000)")
    parser.add_argument("--repeats", type=int, default=7, help="timed loops; the best counts (default 7)")
    args = parser.parse_args()

    scheduler = DDIMScheduler(clip_sample=False)
    scheduler.set_timesteps(args.steps)
    timesteps = list(scheduler.timesteps)
    generator = torch.Generator().manual_seed(0)
    start = torch.randn((1, 2), generator=generator, dtype=torch.float32)
    zeros = torch.zeros((1, 2), dtype=torch.float32)

    def loop():
        sample = start
        for t in timesteps:
            sample = scheduler.step(zeros, t, sample).prev_sample
        return sample

    with torch.inference_mode():
        loop()  # Warms up torch's dispatch and the allocator.
        best = float("inf")
        for _ in range(args.repeats):
            began = time.perf_counter()
            loop()
            best = min(best, time.perf_counter() - began)
    per_step_us = best / len(timesteps) * 1e6
    print(f"diffusers DDIMScheduler.step: {per_step_us:.2f} us/step over {len(timesteps)} steps", file=sys.stderr)
    print(f"host.diffusers\t{per_step_us:.6g}\tus/step")


if __name__ == "__main__":
    main()
