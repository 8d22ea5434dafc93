#!/usr/bin/env bash
# Runs every benchmark of sched and prints one table (bench/README.md describes each):
#
#   bench/run.sh                 # everything; about 5 minutes on a 2-core machine
#   BATCH=65536 bench/run.sh     # the end-to-end batch (default 2^14 = 16384; 2^16 takes over 30 s per engine on 2 cores)
#   NO_PYTHON=1 bench/run.sh     # the Rust benchmarks only; the diffusers columns print n/a
#
# It builds in release, runs the engine benchmarks (benches/engine.rs) and the fused-kernel one
# (kernels/examples/kernel_throughput.rs), then diffusers' references (bench/diffusers_*.py) in a
# Python environment with torch and diffusers: tests/conformance/.venv-conformance when it exists
# (the same pins), else bench/.venv, created here from bench/requirements.txt on first use. When
# no such environment can be had, the Python columns print n/a and the rest still runs.
#
# Results go to target/sched-bench/results.tsv (one `key<TAB>value<TAB>unit` line each), beside
# the end-to-end checkpoint, initial noise and samples.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/sched-bench"
RESULTS="$OUT/results.tsv"
BATCH="${BATCH:-16384}"
KERNEL_LOG2_LEN="${KERNEL_LOG2_LEN:-24}"
mkdir -p "$OUT"
: > "$RESULTS"

log() { printf '==> %s\n' "$*" >&2; }

# The Python environment: prints the interpreter's path, or nothing when there is none.
python_env() {
    if [[ -n "${NO_PYTHON:-}" ]]; then
        return 0
    fi
    local conformance="$ROOT/tests/conformance/.venv-conformance/bin/python"
    local own="$ROOT/bench/.venv/bin/python"
    for candidate in "$conformance" "$own"; do
        if [[ -x "$candidate" ]] && "$candidate" -c 'import torch, diffusers, safetensors' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    if ! command -v python3 >/dev/null; then
        log "no python3: the diffusers columns will be n/a"
        return 0
    fi
    log "creating bench/.venv (torch and diffusers: a large download on first use)"
    if ! python3 -m venv "$ROOT/bench/.venv" >&2; then
        log "could not create bench/.venv: the diffusers columns will be n/a"
        return 0
    fi
    # The CPU-only torch wheels live on PyTorch's own index; use it when it answers, else PyPI
    # (whose Linux torch pulls its CUDA libraries, several GiB, but runs on the CPU all the same).
    local torch_pin
    torch_pin="$(grep -E '^torch==' "$ROOT/bench/requirements.txt")"
    if "$own" -m pip install -q --timeout 15 --retries 0 \
        --index-url https://download.pytorch.org/whl/cpu "$torch_pin" >&2 2>/dev/null; then
        log "installed the CPU-only $torch_pin"
    else
        log "PyTorch's CPU index is not reachable: installing torch from PyPI"
    fi
    if ! "$own" -m pip install -q -r "$ROOT/bench/requirements.txt" >&2; then
        log "pip install failed: the diffusers columns will be n/a"
        return 0
    fi
    echo "$own"
}

log "building (release)"
cargo build --release --bench engine -p sched >&2
cargo build --release -p sched-kernels --example kernel_throughput >&2

log "(a) host overhead per step"
cargo bench -q --bench engine -- host --tsv "$RESULTS" >&2

log "(b) fused update throughput over 2^$KERNEL_LOG2_LEN f32"
cargo run -q --release -p sched-kernels --example kernel_throughput -- \
    --log2-len "$KERNEL_LOG2_LEN" --tsv "$RESULTS" >&2

log "(c) end to end, batch $BATCH"
cargo bench -q --bench engine -- e2e --batch "$BATCH" --dir "$OUT" --tsv "$RESULTS" >&2

log "(d) compile latency"
cargo bench -q --bench engine -- compile --tsv "$RESULTS" >&2

PYTHON="$(python_env)"
if [[ -n "$PYTHON" ]]; then
    log "diffusers references with $PYTHON"
    # A failing reference leaves its cells n/a; the table still prints.
    "$PYTHON" "$ROOT/bench/diffusers_host.py" >> "$RESULTS" || log "diffusers_host.py failed"
    "$PYTHON" "$ROOT/bench/diffusers_e2e.py" "$OUT" >> "$RESULTS" || log "diffusers_e2e.py failed"
fi

cargo bench -q --bench engine -- report "$RESULTS"
