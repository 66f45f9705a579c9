"""Peak memory (section `memory`, rows "4" of the machine table: docs/benchmarks/cpu-tiny.md).

Peak extra memory of our extraction versus output_hidden_states=True (+ output_router_logits=True, what the public
code asks for) and a bare forward, on the same batches. CPU: resident memory sampled every 0.5 ms in a fresh
subprocess per variant (benchmarks/bench.py --_memory-child); CUDA: torch.cuda.max_memory_allocated. Reported in MiB
and as ratios to ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from benchmarks.common import long_texts, median, mib, padded_batches
from moee_exp.features.extract import forward_features

BENCH = Path(__file__).with_name("bench.py")  # the child is the dispatcher, as a run of the benchmark is

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
            cmd = [sys.executable, str(BENCH), "--_memory-child", v, "--_model-dir", str(model_dir),
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


def rows(res: dict, args) -> list[str]:
    """The table's rows of this section."""
    lines = []
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
    return lines
