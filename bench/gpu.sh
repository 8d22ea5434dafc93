#!/usr/bin/env bash
# sched's GPU checks, for a machine with an NVIDIA GPU and no Rust toolchain (docs/gpu.md):
#
#   bench/gpu.sh build   # on a machine with Rust: the release CLI, the CUDA parity tests
#                        # (tests/it/cuda.rs), the GPU benchmark (benches/gpu.rs) and the wheels of
#                        # diffusers (not on the GPU image; PyTorch is) into .gpu/
#   bench/gpu.sh run     # on the GPU machine, from the repository root with .gpu/ beside it:
#                        # finds libcuda, libnvrtc and libcublas, runs the parity tests, then the
#                        # benchmark and diffusers + PyTorch on the same GPU, and prints the
#                        # table last
#
# `run` writes the whole log and the benchmark's results (key<TAB>value<TAB>unit) to $OUT when
# that is set (the device tool's output folder), else to .gpu/out. It exits non-zero when a
# parity test fails; the benchmark runs either way.

set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DIST="$ROOT/.gpu"

log() { printf '==> %s\n' "$*" >&2; }

# The path of the executable cargo built for a target, from its JSON messages on stdin.
executable_of() {
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") == "compiler-artifact" and message.get("executable") and message["target"]["name"] == sys.argv[1]:
        print(message["executable"])
' "$1" | tail -1
}

build() {
    set -e
    mkdir -p "$DIST"
    log "building the release CLI"
    cargo build --release --locked
    cp target/release/sched "$DIST/sched"
    log "building the CUDA parity tests (the root crate's test binary; \`run\` runs its cuda:: tests)"
    local tests bench
    tests="$(cargo test --release --locked --test it --no-run --message-format=json | executable_of it)"
    cp "$tests" "$DIST/cuda-tests"
    log "building the GPU benchmark"
    bench="$(cargo bench --locked --bench gpu --no-run --message-format=json | executable_of gpu)"
    cp "$bench" "$DIST/gpu-bench"
    log "downloading the diffusers wheels (pure Python; the GPU image has PyTorch and the rest)"
    mkdir -p "$DIST/wheels"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 -d "$DIST/wheels" \
        diffusers==0.42.1 importlib_metadata==8.7.0
    # Debug information is not needed there, and the device tool carries 64 MiB at most.
    strip "$DIST/sched" "$DIST/cuda-tests" "$DIST/gpu-bench" 2>/dev/null || true
    du -sh "$DIST"/* >&2
    log "done: carry .gpu to the GPU machine and run bench/gpu.sh run there"
}

# The folder of the first file named like $1 under the usual library locations.
library_dir() {
    local found
    found="$(ldconfig -p 2>/dev/null | awk -v name="$1" 'index($1, name) == 1 { print $NF; exit }')"
    if [[ -z "$found" ]]; then
        found="$(find /usr/local/nvidia /usr/local/cuda /usr/lib /usr/lib64 /opt /lib -name "$1*" \
            \( -type f -o -type l \) 2>/dev/null | head -1)"
    fi
    [[ -n "$found" ]] && dirname "$found"
}

run() {
    local out="${OUT:-$DIST/out}"
    mkdir -p "$out"
    local cuda nvrtc cublas
    cuda="$(library_dir libcuda.so)"
    nvrtc="$(library_dir libnvrtc.so.13)"
    cublas="$(library_dir libcublas.so.13)"
    log "libcuda in ${cuda:-(not found)}; libnvrtc 13 in ${nvrtc:-(not found)}; libcublas 13 in ${cublas:-(not found)}"
    export LD_LIBRARY_PATH="${cuda:+$cuda:}${nvrtc:+$nvrtc:}${cublas:+$cublas:}${LD_LIBRARY_PATH:-}"
    export SCHED_ROOT="$ROOT"
    export SCHED_CACHE_DIR="$out/ptx-cache"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/gpu.txt" >&2

    log "CUDA parity tests (tests/it/cuda.rs)"
    "$DIST/cuda-tests" cuda:: --test-threads=1 --nocapture 2>&1 | tee "$out/parity.log"
    local parity=${PIPESTATUS[0]}

    log "one schedule from the CLI on the GPU"
    "$DIST/sched" run examples/ddim.sched --device cuda --batch 65536 --json 2>&1 | tee "$out/cli.json"
    "$DIST/sched" run examples/ddim.sched --model net=examples/models/eight/eps.safetensors --param eta=1.0 \
        --device cuda --batch 4096 --runs 8 --json 2>&1 | tee "$out/cli_runs.json"

    log "GPU benchmark (benches/gpu.rs)"
    : > "$out/gpu.tsv"
    "$DIST/gpu-bench" --tsv "$out/gpu.tsv" --dir "$out/e2e" 2>"$out/bench.log"
    local bench=$?
    [[ $bench -ne 0 ]] && cat "$out/bench.log" >&2

    log "diffusers + PyTorch on the same GPU (bench/diffusers_e2e.py)"
    local site=/tmp/sched-site
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
        "$DIST"/wheels/*.whl >&2
    PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}" python3 bench/diffusers_e2e.py "$out/e2e" \
        --device cuda --prefix gpu.e2e >> "$out/gpu.tsv"
    local diffusers=$?

    log "parity tests exit $parity, benchmark exit $bench, diffusers exit $diffusers"
    "$DIST/gpu-bench" report "$out/gpu.tsv"
    [[ $parity -eq 0 && $bench -eq 0 && $diffusers -eq 0 ]]
}

case "${1:-}" in
    build) build ;;
    run) run ;;
    *)
        echo "usage: bench/gpu.sh build|run (see the top of this file)" >&2
        exit 2
        ;;
esac
