"""Sweep amortization (section `sweep`, rows "1" of the machine table: docs/benchmarks/cpu-tiny.md).

The 13 jobs hs + rw + moee_concat + moee_sum × 10 α through the real runner in one process, versus one job:
featurization time (model load + tokenization + forward + cache I/O) and wall time; with the feature cache on, off
(model loaded once, reused), and off with a reload per job (the public code's behaviour: every job its own process).
Tiny model and demo tasks only. Reported as ratios sweep / one job (target: featurization <= 1.5x with the cache on).
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

from benchmarks.common import ROOT, clock, median

SWEEP = [["emb=hs"], ["emb=rw"], ["emb=moee_concat"]]
SWEEP += [["emb=moee_sum", f"weights.alpha={a / 10:g}"] for a in range(1, 11)]


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


def rows(res: dict, args) -> list[str]:
    """The table's rows of this section."""
    lines = []
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
    return lines
