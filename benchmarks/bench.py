"""Benchmarks for "one forward pass per model × prompt × dataset" (see BENCHMARKS.md for the numbers and method).

    python benchmarks/bench.py                          # CPU, tiny models, medians of 3 repeats (~15 min, 2 cores)
    python benchmarks/bench.py --update BENCHMARKS.md   # same, and write the table into BENCHMARKS.md
    python benchmarks/bench.py --sections overhead,padding --repeats 5
    python benchmarks/bench.py --model olmoe-full --device cuda --dtype bfloat16            # GPU: OLMoE-1B-7B
    python benchmarks/bench.py --model olmoe-full --device cuda --quantization 4bit         #   architecture,
                                                                                            #   random weights

Sections, each reported as a ratio:
  sweep     the 13 jobs hs + rw + moee_concat + moee_sum × 10 α through the real runner in one process, versus
            one job: featurization time (model load + tokenization + forward + cache I/O) and wall time; with
            the feature cache on, off (model loaded once, reused), and off with a reload per job (the public
            code's behaviour: every job its own process). Tiny model and demo tasks only.
  overhead  our extraction (hooks, pooling) versus a bare forward of the same padded batches.
  padding   padded tokens / real tokens with length-sorted batches, on a set of mixed lengths.
  memory    peak extra memory of our extraction versus output_hidden_states=True (+ output_router_logits=True,
            what the public code asks for) on the same batches. CPU: resident memory sampled every 0.5 ms in a
            fresh subprocess per variant; CUDA: torch.cuda.max_memory_allocated.
  throughput (olmoe-full) texts/s and tokens/s of our extraction.
  scale     (not in the default set; --sections scale) what a full paper reproduction costs: for each of the 19
            paper datasets, the texts mteb's evaluator embeds and their tokens, the scoring time of the real task
            class's evaluator at real size on synthetic embeddings of 1024/2048/3072 dims (benchmarks/scale.py,
            data from moee_exp.scoring.synthetic_tasks sized by mteb's descriptive statistics), the feature-cache bytes,
            an H100 roofline of the extraction; totals for +experiment=paper_main and alpha (~15 min, 1 core).
            python benchmarks/bench.py --sections scale --threads 1 --update BENCHMARKS.md
  ourside   (not in the default set) our side of a job (feature-cache reads, fusion, the embeddings handed to mteb)
            per text, before and after issue 20, on a TwitterURLCorpus-sized case at OLMoE's 3072 dims, and the main
            scores of 4 real-size datasets with both fusions (benchmarks/ourside.py; ~3 min).
  experts   (not in the default set) extraction on CPU under each experts implementation of the installed transformers
            (eager, grouped_mm, batched_mm) on a random model of OLMoE-1B-7B's layer shapes (--experts-layers layers),
            next to a bare forward and the machine's limit (active FLOPs per token / measured matmul peak)
            (benchmarks/experts.py; ~5 min).
  fixed     (not in the default set) the fixed cost of the default job `python run.py`, itemised: imports,
            config, task loading, mteb evaluation, feature cache reads, W&B init and finish (benchmarks/jobcost.py).
  alpha     (not in the default set) an alpha sweep of moee_sum (--alpha-jobs) over 4 paper datasets at real size
            (synthetic data, tiny model) through run.py: Hydra's basic launcher (jobs one after the other) versus
            the joblib launcher (--alpha-workers) on one shared feature cache, without and with the extraction
            lock; wall time, CPU time, texts extracted, and the largest score difference.
  cut       (not in the default set) the alpha sweep's dominant cost cut: --alpha-jobs moee_sum jobs over one paper
            dataset per task type at real size (synthetic data, tiny model, features cached first and widened to
            OLMoE-1B-7B's dims, --cut-dims), one after the other, with datasets' lazy Column read row by row
            (MOEE_FAST_COLUMNS=0) and in one batch (moee_exp.scoring.fast_columns); wall time, scoring time, the largest
            score difference (~10 min).

`--model tiny` uses the default tiny model for sweep/overhead/padding and a larger tiny OLMoE (hidden 512, 8 layers,
16 experts, texts of 300-600 tokens) for overhead and memory, built into a temp dir. `--model olmoe-full` builds
OLMoE-1B-7B's architecture from `OlmoeConfig()` defaults with intermediate_size=1024 (OLMoE-1B-7B-0924's; the
class default, 2048, would make a 13 B model) and random weights (no download; `--layers N` shrinks it for a smoke
test), with the tiny offline tokenizer, whose token ids all exist in OLMoE's vocabulary.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if "--threads" in sys.argv:  # before numpy/torch start their thread pools (sklearn's BLAS in the sweep too)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = sys.argv[sys.argv.index("--threads") + 1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from moee_exp.features.extract import (  # noqa: E402
    extract,
    forward_features,
    length_batches,
    prompt_texts,
)
from moee_exp.features.prompts import TEMPLATES  # noqa: E402

TEMPLATE = TEMPLATES["prompteol"]
BIG_TINY = {  # a larger tiny OLMoE: compute, not Python overhead, dominates its forward pass
    "model_type": "olmoe",
    "seed": 0,
    "vocab_size": 512,
    "config": {
        "hidden_size": 512,
        "intermediate_size": 256,
        "num_hidden_layers": 8,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "num_experts": 16,
        "num_experts_per_tok": 2,
        "max_position_embeddings": 2048,
        "initializer_range": 0.02,
    },
}
SWEEP = [["emb=hs"], ["emb=rw"], ["emb=moee_concat"]]
SWEEP += [["emb=moee_sum", f"weights.alpha={a / 10:g}"] for a in range(1, 11)]


# -- data ------------------------------------------------------------------------------------------------------------


def demo_texts() -> list[str]:
    """Every text of the bundled demo tasks (strings of 16+ characters: labels are shorter)."""
    out: list[str] = []

    def walk(x):
        if isinstance(x, str):
            if len(x) >= 16:
                out.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for path in sorted((ROOT / "moee_exp/data/demo").glob("*.json")):
        walk(json.loads(path.read_text(encoding="utf-8")))
    return list(dict.fromkeys(out))


def mixed_texts(n: int = 1000, max_join: int = 16, seed: int = 0) -> list[str]:
    """Demo texts plus texts made of 1..max_join demo texts joined: lengths from ~10 to ~500 tokens, shuffled."""
    base = demo_texts()
    rng = random.Random(seed)
    out = list(base)
    while len(out) < n:
        out.append(" ".join(rng.sample(base, rng.randint(1, max_join))))
    rng.shuffle(out)
    return out[:n]


def long_texts(n: int, seed: int = 1) -> list[str]:
    base = demo_texts()
    rng = random.Random(seed)
    return [" ".join(rng.sample(base, rng.randint(8, 16))) for _ in range(n)]


def padded_batches(lm, texts: list[str], batch_size: int, max_length: int = 512):
    tok = lm.tokenizer
    prompted = prompt_texts(texts, TEMPLATE, tok, max_length).texts
    enc = tok(prompted, truncation=True, max_length=max_length)["input_ids"]
    tok.padding_side = "left"
    batches = []
    for idx in length_batches([len(e) for e in enc], batch_size):
        b = tok.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt")
        batches.append((b["input_ids"].to(lm.device), b["attention_mask"].to(lm.device)))
    return prompted, batches


# -- models ----------------------------------------------------------------------------------------------------------


def default_tiny_cfg() -> dict:
    import yaml

    from moee_exp.jobs.config import ModelConfig

    cfg = dict(ModelConfig().__dict__)
    spec = yaml.safe_load((ROOT / "conf/model/tiny.yaml").read_text())
    cfg.update({k: v for k, v in spec.items() if k != "defaults"})
    cfg["cache_dir"] = os.environ.get("MOEE_CACHE_DIR", "~/.cache/moee_exp")
    return cfg


def load_tiny(spec: dict | None, cache_dir: str | Path):
    from moee_exp.features.loading import load_model
    from moee_exp.features.tiny import ensure_tiny_model

    spec = spec or default_tiny_cfg()["tiny"]
    return load_model(str(ensure_tiny_model(dict(spec), cache_dir)), device="cpu")


def build_olmoe_full(args, tmp: Path):
    """OLMoE-1B-7B's architecture (OlmoeConfig() defaults), random weights, on args.device; 4/8-bit via a save."""
    from transformers import AutoModel, OlmoeConfig

    from moee_exp.features.loading import (
        LoadedModel,
        load_model,
        resolve_device,
        resolve_dtype,
    )
    from moee_exp.features.routers import find_routers
    from moee_exp.features.tiny import _train_tokenizer

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    tokenizer = _train_tokenizer(512)  # ids 0..511: all valid in OLMoE's 50304-token vocabulary
    # OlmoeConfig()'s defaults are OLMoE-1B-7B's except the expert width: 2048 there, 1024 in OLMoE-1B-7B-0924
    # (6.9 B params; with 2048 it would be 13 B).
    overrides = {"num_hidden_layers": args.layers} if args.layers else {}
    config = OlmoeConfig(intermediate_size=1024, **overrides)
    torch.manual_seed(0)
    t = time.perf_counter()
    target = device if args.quantization == "none" else torch.device("cpu") if device.type == "cpu" else device
    with torch.device(target):
        model = AutoModel.from_config(config, dtype=dtype)
    model.eval()
    print(f"built OLMoE architecture ({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params, "
          f"{config.num_hidden_layers} layers) on {target} in {time.perf_counter() - t:.0f} s", flush=True)
    if args.quantization == "none":
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return LoadedModel(model, tokenizer, find_routers(model), "olmoe-full-random", device, {})
    path = tmp / "olmoe-full"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return load_model(str(path), dtype=args.dtype, quantization=args.quantization, device=str(device))


# -- timing helpers --------------------------------------------------------------------------------------------------


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# With one torch thread on a CPU, the process's CPU time is the compute and is not inflated when other processes
# share the cores (wall time is); elsewhere wall time (GPU: after a synchronize). main() picks.
CLOCK = {"fn": time.perf_counter, "name": "wall time"}


def clock() -> float:
    return CLOCK["fn"]()


def timed(fn, device="cpu") -> float:
    sync(device)
    t = clock()
    fn()
    sync(device)
    return clock() - t


def median(xs) -> float:
    return statistics.median(xs)


# -- 1. sweep amortization -------------------------------------------------------------------------------------------


class FeaturizeTimer:
    """Adds up the time spent in Featurizer.__call__ (model load on a miss, tokenization, forward, cache I/O)."""

    def __init__(self):
        from moee_exp.features import featurize

        self.featurize, self.seconds = featurize, 0.0
        self._orig = featurize.Featurizer.__call__
        timer = self

        def call(self_, *a, **k):
            t = clock()
            try:
                return timer._orig(self_, *a, **k)
            finally:
                timer.seconds += clock() - t

        featurize.Featurizer.__call__ = call

    def reset(self) -> None:
        self.seconds = 0.0


def run_jobs(jobs, common, tmp: Path, timer: FeaturizeTimer, reload_each: bool = False) -> dict:
    from hydra import compose, initialize_config_dir

    from moee_exp.jobs.runner import run_job

    featurize = timer.featurize
    featurize._loaded.clear()  # every measurement starts with no model in memory
    loads0 = featurize.load_count
    timer.reset()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfgs = [compose("config", overrides=[*common, *job]) for job in jobs]
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        for i, cfg in enumerate(cfgs):
            if reload_each:
                featurize._loaded.clear()
            run_job(cfg, tmp / f"job{i}-{time.monotonic_ns()}", "bench")
    return {"wall": time.perf_counter() - t, "feat": timer.seconds, "loads": featurize.load_count - loads0}


def sweep_section(args, tmp: Path) -> dict:
    from moee_exp.jobs.config import register

    register()
    timer = FeaturizeTimer()
    base = ["logger=none", "progress=false"]

    def cache(tag):
        return [f"cache.dir={tmp / 'features' / tag}"]

    run_jobs([SWEEP[-1]], base + cache("warmup"), tmp, timer)  # imports, mteb/sklearn warm-up, tiny model built
    rows = {k: [] for k in ("one", "sweep_on", "sweep_off", "sweep_off_reload")}
    for r in range(args.repeats):
        rows["one"].append(run_jobs([SWEEP[-1]], base + cache(f"one{r}"), tmp, timer))
        rows["sweep_on"].append(run_jobs(SWEEP, base + cache(f"on{r}"), tmp, timer))
        rows["sweep_off"].append(run_jobs(SWEEP, base + ["cache=off"], tmp, timer))
        rows["sweep_off_reload"].append(run_jobs(SWEEP, base + ["cache=off"], tmp, timer, reload_each=True))
        print(f"  sweep repeat {r + 1}/{args.repeats}: " + ", ".join(
            f"{k} wall {v[-1]['wall']:.1f}s feat {v[-1]['feat']:.2f}s loads {v[-1]['loads']}" for k, v in rows.items()
        ), flush=True)
    med = {k: {m: median([x[m] for x in v]) for m in ("wall", "feat", "loads")} for k, v in rows.items()}
    return {"jobs": len(SWEEP), "median": med, "repeats": rows}


# -- 2. extraction overhead ------------------------------------------------------------------------------------------


def overhead(lm, texts, batch_size, repeats) -> dict:
    prompted, batches = padded_batches(lm, texts, batch_size)
    dev = lm.device

    def bare():
        with torch.inference_mode():
            for ids, mask in batches:
                lm.model(input_ids=ids, attention_mask=mask, use_cache=False)

    def ours():
        for ids, mask in batches:
            forward_features(lm, ids, mask, ("hs", "rw"))

    def ours_end_to_end():  # + tokenization, padding, batching, output assembly
        extract(lm, prompted, batch_size=batch_size, progress=False)

    fns = {"bare": bare, "ours": ours, "ours_end_to_end": ours_end_to_end}
    for fn in fns.values():
        fn()  # warm-up
    repeats = max(repeats, 9)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():  # interleaved, so drift hits every variant alike
            times[k].append(timed(fn, dev))
    med = {k: median(v) for k, v in times.items()}
    tokens = int(sum(int(m.sum()) for _, m in batches))
    return {
        "texts": len(texts),
        "batches": len(batches),
        "tokens": tokens,
        "seconds": med,
        "ratio": med["ours"] / med["bare"],
        "ratio_end_to_end": med["ours_end_to_end"] / med["bare"],
        "texts_per_s": len(texts) / med["ours_end_to_end"],
        "tokens_per_s": tokens / med["ours_end_to_end"],
    }


# -- 3. padding ------------------------------------------------------------------------------------------------------


def padding_section(lm, batch_size: int) -> dict:
    texts = mixed_texts()
    tok = lm.tokenizer
    prompted = prompt_texts(texts, TEMPLATE, tok, 512).texts
    lengths = [len(e) for e in tok(prompted, truncation=True, max_length=512)["input_ids"]]

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    real = sum(lengths)
    in_order = [list(range(i, min(i + batch_size, len(lengths)))) for i in range(0, len(lengths), batch_size)]
    return {
        "texts": len(texts),
        "batch_size": batch_size,
        "real_tokens": real,
        "min_len": min(lengths),
        "max_len": max(lengths),
        "sorted": padded(length_batches(lengths, batch_size)) / real,
        "input_order": padded(in_order) / real,
    }


# -- 4. peak memory --------------------------------------------------------------------------------------------------

VARIANTS = ("bare", "ours", "hidden_states", "hidden_states+router_logits")


def run_variant(lm, batches, variant: str) -> None:
    """One pass over the batches, keeping what each variant's caller keeps (pooled features only)."""
    for ids, mask in batches:
        if variant == "ours":
            forward_features(lm, ids, mask, ("hs", "rw"))
            continue
        with torch.inference_mode():
            kw = {}
            if variant.startswith("hidden_states"):
                kw["output_hidden_states"] = True
            if variant.endswith("router_logits"):
                kw["output_router_logits"] = True
            out = lm.model(input_ids=ids, attention_mask=mask, use_cache=False, **kw)
            last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(1)
            rows = torch.arange(len(ids), device=ids.device)
            states = out.hidden_states if kw else (out.last_hidden_state,)
            hs = states[-1][rows, last].float().cpu()  # noqa: F841 (what the caller keeps)
            del out, states


class PeakRSS(threading.Thread):
    page = os.sysconf("SC_PAGE_SIZE")

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = self.rss(), True

    @classmethod
    def rss(cls) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * cls.page

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.0005)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, self.rss())


def memory_child(model_dir: str, variant: str, n_texts: int, batch_size: int) -> None:
    """In a fresh process: extra resident memory (peak - before) of one variant over the batches."""
    from moee_exp.features.loading import load_model

    lm = load_model(model_dir, device="cpu")
    _, batches = padded_batches(lm, long_texts(n_texts), batch_size)
    run_variant(lm, [(ids[:2, -16:], mask[:2, -16:]) for ids, mask in batches[:1]], variant)  # kernels, lazy init
    before = PeakRSS.rss()
    sampler = PeakRSS()
    sampler.start()
    run_variant(lm, batches, variant)
    peak = sampler.stop()
    print(json.dumps({"variant": variant, "extra_bytes": peak - before, "rss_before": before}))


def memory_cpu(model_dir: Path, args) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for v in VARIANTS:
            cmd = [sys.executable, __file__, "--_memory-child", v, "--_model-dir", str(model_dir),
                   "--mem-texts", str(args.mem_texts), "--mem-batch-size", str(args.mem_batch_size)]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            out[v].append(json.loads(res.stdout.strip().splitlines()[-1])["extra_bytes"])
    med = {v: median(x) for v, x in out.items()}
    return {"method": "rss", "extra_bytes": med, "all": out}


def memory_cuda(lm, args) -> dict:
    _, batches = padded_batches(lm, long_texts(args.mem_texts), args.mem_batch_size)
    med = {}
    for v in VARIANTS:
        run_variant(lm, batches[:1], v)  # warm-up
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run_variant(lm, batches, v)
        torch.cuda.synchronize()
        med[v] = torch.cuda.max_memory_allocated() - before
    return {"method": "cuda", "extra_bytes": med, "weights_bytes": torch.cuda.memory_allocated()}


def memory_ratios(mem: dict) -> dict:
    x = mem["extra_bytes"]
    return {v: x[v] / x["ours"] for v in VARIANTS}


# -- report ----------------------------------------------------------------------------------------------------------


def mib(b) -> str:
    return f"{b / 2**20:.0f} MiB"


def report(res: dict, args) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {res['machine']}; medians of {args.repeats} repeats "
        f"(overhead: of 9); timings are {CLOCK['name']} except where it says wall. Command: `{res['command']}`",
        "",
        "| # | measure | result | target |",
        "|---|---|---|---|",
    ]
    if "sweep" in res:
        m = res["sweep"]["median"]
        one = m["one"]
        on, off, rel = m["sweep_on"], m["sweep_off"], m["sweep_off_reload"]
        n = res["sweep"]["jobs"]
        ok = "met" if on["feat"] / one["feat"] <= 1.5 else "**missed**"
        lines += [
            f"| 1 | featurization, {n}-job sweep / 1 job, cache on ({on['feat']:.2f} s / {one['feat']:.2f} s; "
            f"model loads {on['loads']:.0f}) | **{on['feat'] / one['feat']:.2f}x** | <= 1.5x ({ok}) |",
            f"| 1 | featurization, {n}-job sweep / 1 job, cache off, model reused in-process "
            f"({off['feat']:.2f} s) | {off['feat'] / one['feat']:.2f}x | (comparison) |",
            f"| 1 | featurization, {n}-job sweep / 1 job, cache off, model reloaded per job = public code "
            f"({rel['feat']:.2f} s; loads {rel['loads']:.0f}) | {rel['feat'] / one['feat']:.2f}x | (comparison) |",
            f"| 1 | wall time of the whole jobs (mteb scoring included), {n} jobs / 1 job: cache on "
            f"({on['wall']:.0f} s / {one['wall']:.1f} s) | {on['wall'] / one['wall']:.2f}x | see note |",
            f"| 1 | same, cache off / cache off + reload per job ({off['wall']:.0f} s / {rel['wall']:.0f} s) | "
            f"{off['wall'] / one['wall']:.2f}x / {rel['wall'] / one['wall']:.2f}x | (comparison) |",
        ]
    first = "default tiny model" if args.model == "tiny" else f"OLMoE-1B-7B architecture ({res.get('setup', '')})"
    for key, label in (("overhead", first), ("overhead_big", "larger tiny model")):
        if key in res:
            o = res[key]
            ok = "met" if o["ratio"] <= 1.10 else "**missed**"
            s = o["seconds"]
            lines += [
                f"| 2 | extraction / bare forward, same batches, {label} ({o['texts']} texts, {o['tokens']} tokens; "
                f"{s['ours']:.3f} s / {s['bare']:.3f} s) | **{o['ratio']:.3f}x** | <= 1.10x ({ok}) |",
                f"| 2 | same with tokenization, padding and output assembly ({s['ours_end_to_end']:.3f} s; "
                f"{o['texts_per_s']:.0f} texts/s) | {o['ratio_end_to_end']:.3f}x | (comparison) |",
            ]
    if "padding" in res:
        p = res["padding"]
        ok = "met" if p["sorted"] <= 1.15 else "**missed**"
        lines += [
            f"| 3 | padded / real tokens, length-sorted batches of {p['batch_size']} ({p['texts']} texts, "
            f"{p['min_len']}-{p['max_len']} tokens) | **{p['sorted']:.3f}** | <= 1.15 ({ok}) |",
            f"| 3 | same, batches in input order (no sorting) | {p['input_order']:.3f} | (comparison) |",
        ]
    if "memory" in res:
        x, r = res["memory"]["extra_bytes"], memory_ratios(res["memory"])
        what = "extra resident memory" if res["memory"]["method"] == "rss" else "extra CUDA memory"
        lines += [
            f"| 4 | peak {what} of our extraction ({res['memory_setup']}) | **{mib(x['ours'])}** | |",
            f"| 4 | output_hidden_states=True | {mib(x['hidden_states'])} ({r['hidden_states']:.2f}x ours) | |",
            f"| 4 | output_hidden_states=True + output_router_logits=True (public code) | "
            f"{mib(x['hidden_states+router_logits'])} ({r['hidden_states+router_logits']:.2f}x ours) | |",
            f"| 4 | bare forward | {mib(x['bare'])} ({r['bare']:.2f}x ours) | |",
        ]
    return "\n".join(lines)


def publish(args, res: dict, label: str, what: str, body: str) -> None:
    """Print a section's table with its date, machine and command; --update writes it into its bench:<label>
    block, --json saves every result so far."""
    table = f"Measured {time.strftime('%Y-%m-%d')} on {res['machine']}{what}. Command: `{res['command']}`\n\n{body}"
    print("\n" + table)
    if args.update:
        update_file(args.update, label, table)
        print(f"\nwritten to {args.update} (block bench:{label})")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))


def update_file(path: Path, label: str, table: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    start, end = f"<!-- bench:{label} -->", f"<!-- /bench:{label} -->"
    block = f"{start}\n{table}\n{end}"
    if start in text and end in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + f"\n\n{block}\n"
    path.write_text(text, encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=("tiny", "olmoe-full"), default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--quantization", choices=("none", "4bit", "8bit"), default="none")
    ap.add_argument("--layers", type=int, default=0, help="olmoe-full: fewer layers (smoke test); 0 = OLMoE's 16")
    ap.add_argument("--sections", default="sweep,overhead,padding,memory")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch/BLAS threads (0: their default)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--mem-texts", type=int, default=32)
    ap.add_argument("--texts", type=int, default=256, help="olmoe-full: texts for overhead/throughput")
    ap.add_argument("--mem-batch-size", type=int, default=16)
    ap.add_argument("--scale-dims", default="1024,2048,3072", help="scale: embedding dims to time the evaluators at")
    ap.add_argument("--scale-tasks", default="", help="scale: only these paper datasets (comma-separated)")
    ap.add_argument("--alpha-jobs", type=int, default=6, help="alpha: jobs of the sweep (alpha = 0.1, 0.2, ...)")
    ap.add_argument("--cut-dims", choices=("olmoe", "tiny"), default="olmoe",
                    help="cut: score features at OLMoE-1B-7B's dims (the tiny model's, widened) or the tiny model's")
    ap.add_argument("--alpha-workers", type=int, default=2, help="alpha: joblib workers of the parallel sweep")
    ap.add_argument("--experts-layers", type=int, default=2, help="experts: layers of the OLMoE-shaped model")
    ap.add_argument("--experts-batch", type=lambda v: tuple(int(x) for x in v.split(",")), default=(8, 128),
                    help="experts: texts,tokens of the padded batch")
    ap.add_argument("--experts-small-tokens", type=int, default=8, help="experts: tokens of the batch batched_mm runs on")
    ap.add_argument("--update", type=Path, help="write the table into this markdown file (between bench markers)")
    ap.add_argument("--json", type=Path, help="write all measurements as JSON")
    ap.add_argument("--_memory-child", dest="memory_child", help=argparse.SUPPRESS)
    ap.add_argument("--_model-dir", dest="model_dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.model_dir, args.memory_child, args.mem_texts, args.mem_batch_size)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.threads == 1 and args.device == "cpu":
        CLOCK.update(fn=time.process_time, name="CPU time")
    logging.basicConfig(level=logging.WARNING)
    for name in ("moee_exp", "transformers", "mteb"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sections = set(args.sections.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="moee-bench-"))
    res = {
        "machine": f"{torch.cuda.get_device_name() if 'cuda' in args.device else 'CPU'}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)",
        "command": "python benchmarks/bench.py " + " ".join(
            a for i, a in enumerate(sys.argv[1:]) if not a.startswith(("--update", "--json"))
            and sys.argv[i] not in ("--update", "--json")),  # where the results went is not part of the command
    }
    try:
        if "ourside" in sections:
            from benchmarks.ourside import report as ourside_report
            from benchmarks.ourside import section as ourside_section

            print("ourside ...", flush=True)
            res["ourside"] = ourside_section(args)
            publish(args, res, "ourside", "; CPU time", ourside_report(res["ourside"]))
            if not sections - {"ourside"}:
                return
        if "experts" in sections:
            from benchmarks.experts import report as experts_report
            from benchmarks.experts import section as experts_section

            print("experts ...", flush=True)
            res["experts"] = experts_section(args, clock)
            publish(args, res, "experts", f"; {CLOCK['name']}, medians of {args.repeats}",
                    experts_report(res["experts"]))
            if not sections - {"ourside", "experts"}:
                return
        if "fixed" in sections:
            from benchmarks.jobcost import measure
            from benchmarks.jobcost import report as fixed_report

            print("fixed ...", flush=True)
            res["fixed"] = measure(args.repeats, tmp)
            publish(args, res, "fixed", "", fixed_report(res["fixed"]))
            if not sections - {"fixed", "alpha", "scale", "cut"}:
                if not sections & {"alpha", "scale", "cut"}:
                    return
        if "cut" in sections:
            from benchmarks.scale import cut_report, cut_section

            print("cut ...", flush=True)
            res["cut"] = cut_section(args)
            publish(args, res, "cut", "; wall and CPU time of whole sweeps", cut_report(res["cut"]))
            if not sections & {"alpha", "scale"}:
                return
        if "alpha" in sections:
            from benchmarks.scale import alpha_report, alpha_section

            print("alpha ...", flush=True)
            res["alpha"] = alpha_section(args)
            publish(args, res, "alpha", "; wall and CPU time of whole sweeps", alpha_report(res["alpha"]))
            if "scale" not in sections:
                return
        if "scale" in sections:
            from benchmarks.scale import report as scale_report
            from benchmarks.scale import scale_section

            print("scale ...", flush=True)
            res["scale"] = scale_section(args, clock)
            publish(args, res, "scale", f"; scoring times are {CLOCK['name']}", scale_report(res["scale"]))
            return
        if args.model == "tiny":
            if "sweep" in sections:
                print("sweep ...", flush=True)
                res["sweep"] = sweep_section(args, tmp)
            if sections & {"overhead", "padding"}:
                lm = load_tiny(None, default_tiny_cfg()["cache_dir"])
                if "overhead" in sections:
                    print("overhead (default tiny) ...", flush=True)
                    res["overhead"] = overhead(lm, demo_texts(), args.batch_size, args.repeats)
                if "padding" in sections:
                    res["padding"] = padding_section(lm, args.batch_size)
            if sections & {"overhead", "memory"}:
                from moee_exp.features.tiny import ensure_tiny_model

                big_dir = ensure_tiny_model(BIG_TINY, tmp / "models")
                if "overhead" in sections:
                    print("overhead (larger tiny) ...", flush=True)
                    big = load_tiny(BIG_TINY, tmp / "models")
                    res["overhead_big"] = overhead(big, long_texts(16), 8, args.repeats)
                    del big
                if "memory" in sections:
                    print("memory ...", flush=True)
                    res["memory"] = memory_cpu(big_dir, args)
                    res["memory_setup"] = (
                        f"larger tiny OLMoE, {args.mem_texts} texts of 300-600 tokens, batches of {args.mem_batch_size}"
                    )
        else:
            lm = build_olmoe_full(args, tmp)
            dev = lm.device
            n_layers = len(lm.routers)
            res["setup"] = (
                f"{n_layers} MoE layers, {args.dtype}, quantization {args.quantization}, batches of {args.batch_size}"
            )
            if "overhead" in sections or "throughput" in sections:
                print("overhead ...", flush=True)
                res["overhead"] = overhead(lm, mixed_texts(args.texts), args.batch_size, args.repeats)
            if "padding" in sections:
                res["padding"] = padding_section(lm, args.batch_size)
            if "memory" in sections and dev.type == "cuda":
                res["memory"] = memory_cuda(lm, args)
                res["memory_setup"] = (
                    f"OLMoE-1B-7B architecture, {args.dtype}/{args.quantization}, {args.mem_texts} texts of "
                    f"300-600 tokens, batches of {args.mem_batch_size}; weights {mib(res['memory']['weights_bytes'])}"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = report(res, args)
    print("\n" + table)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.update:
        label = f"{args.model}-{args.device.split(':')[0]}"
        label += f"-{args.quantization}" if args.quantization != "none" else ""
        update_file(args.update, label, table)
        print(f"\nwritten to {args.update} (block bench:{label})")



# -- α selection (weights=auto / dev; issue 9) ----------------------------------------------------------------------
#   python benchmarks/bench.py --alpha-selection [--repeats 3] [--threads 1] [--update BENCHMARKS.md]
# The cost of choosing α per task, as a ratio to the job's scoring time (mteb.evaluate of every task), on the tiny
# model and the six demo tasks with the feature cache warm (a warm-up job fills it): the ratio is then the largest,
# since scoring is not slowed by any extraction. Also the criterion alone at OLMoE-1B-7B's feature sizes.

ALPHA_JOBS = {"fixed": ["weights=fixed"], "auto (calibration, default)": ["weights=auto"],
              "auto (spread)": ["weights=auto", "weights.criterion=spread"], "dev": ["weights=dev"]}


def alpha_selection_section(args, tmp: Path) -> dict:
    from hydra import compose, initialize_config_dir

    from moee_exp.jobs.config import register
    from moee_exp.jobs.runner import run_job
    from moee_exp.scoring import weights
    from moee_exp.scoring.weights import spread_alpha

    register()
    base = ["logger=none", "progress=false", "predictions=[]", f"cache.dir={tmp / 'features'}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfgs = {k: compose("config", overrides=[*base, *v]) for k, v in ALPHA_JOBS.items()}
    out = {k: [] for k in ALPHA_JOBS}
    with contextlib.redirect_stdout(io.StringIO()):
        for cfg in cfgs.values():  # warm-up: model built, features cached, imports done
            run_job(cfg, tmp / f"warm-{time.monotonic_ns()}", "bench")
        for r in range(args.repeats):
            for name, cfg in cfgs.items():
                weights._calibration.clear()  # each job pays for its calibration α, as the first job of a process does
                t = time.perf_counter()
                rows = run_job(cfg, tmp / f"a{r}-{time.monotonic_ns()}", "bench")
                out[name].append({
                    "wall": time.perf_counter() - t,
                    "select": sum((row.get("alpha_info") or {}).get("time_s", 0.0) for row in rows),
                    "score": sum(row["eval_time_s"] for row in rows),
                })
    med = {k: {m: median([x[m] for x in v]) for m in ("wall", "select", "score")} for k, v in out.items()}
    rng = np.random.default_rng(0)  # the criterion at OLMoE-1B-7B's sizes: HS 2048, RW 16 layers x 64 experts
    feats = {"hs": rng.normal(size=(512, 2048)).astype(np.float32),
             "rw": rng.normal(size=(512, 16, 64)).astype(np.float32)}
    crit = median([timed(lambda: spread_alpha(feats)) for _ in range(5)])
    return {"median": med, "repeats": out, "criterion_512_olmoe_s": crit}


def alpha_selection_report(res: dict, args) -> str:
    m = res["median"]
    fixed = m["fixed"]["wall"]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {res['machine']}; medians of {args.repeats} repeats, wall clock, "
        f"tiny model, the six demo tasks, feature cache warm. Command: `{res['command']}`",
        "",
        "| weights | α selection (s) | scoring (s) | **selection / scoring** | job wall / weights=fixed |",
        "|---|---|---|---|---|",
    ]
    for name, v in m.items():
        lines.append(f"| {name} | {v['select']:.3f} | {v['score']:.2f} | **{v['select'] / v['score']:.3f}** | "
                     f"{v['wall'] / fixed:.2f}x |")
    lines += ["", f"The auto criterion alone on 512 texts at OLMoE-1B-7B's feature sizes (HS 2048, RW 16 x 64; "
                  f"130,816 pairs): {res['criterion_512_olmoe_s'] * 1000:.0f} ms per task."]
    return "\n".join(lines)


def alpha_main() -> None:
    ap = argparse.ArgumentParser(description="α-selection cost (weights=auto/dev) as a ratio to scoring time")
    ap.add_argument("--alpha-selection", action="store_true", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--update", type=Path)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="moee-bench-alpha-"))
    os.environ.setdefault("MOEE_CACHE_DIR", str(tmp / "cache"))
    try:
        res = alpha_selection_section(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["machine"] = f"{os.cpu_count()} CPU cores, torch {torch.__version__}"
    res["command"] = "python benchmarks/bench.py " + " ".join(sys.argv[1:])
    table = alpha_selection_report(res, args)
    print("\n" + table)
    if args.update:
        update_file(args.update, "alpha-selection", table)


if __name__ == "__main__":
    alpha_main() if "--alpha-selection" in sys.argv else main()
