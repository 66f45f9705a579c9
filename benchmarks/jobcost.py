"""The fixed cost of one default job (`python run.py`), itemised (the `fixed` section of benchmarks/bench.py).

A child process runs the default job as run.py does (Hydra config, then run.py's ``job``: the config checks, the
model's reachability, run_job), importing the heavy libraries one at a time first so each import is timed on its
own, and timing the job's phases through thin wrappers: task loading, feature cache reads, mteb evaluation per
dataset, W&B init and finish. What the job imports beyond these (e.g. sentence-transformers, which mteb.evaluate
imports where a job scores through it) is counted in the job's own time.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(job_dir: str) -> None:
    marks, t0 = [], (time.perf_counter(), time.process_time())
    start_cpu = t0[1]  # CPU time of the interpreter's own start-up, before this line

    def mark(name: str) -> None:
        now = (time.perf_counter(), time.process_time())
        marks.append([name, now[0] - mark.last[0], now[1] - mark.last[1]])
        mark.last = now

    mark.last = t0
    sys.path.insert(0, str(ROOT))
    from hydra import compose, initialize_config_dir

    mark("import hydra")
    import moee_exp.jobs.config  # noqa: F401  (run.py's first import of ours)

    mark("import moee_exp.jobs.config (+ what it imports)")
    from moee_exp.features import featurize
    from moee_exp.jobs import record, runner

    mark("import moee_exp.jobs.runner (mteb, datasets, pandas, sklearn, ...)")
    import wandb  # noqa: F401

    mark("import wandb")
    moee_exp.jobs.config.register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["progress=false"])
    mark("compose the config (Hydra)")

    phases = {"tasks": [0.0, 0.0], "features": [0.0, 0.0], "wandb_init": [0.0, 0.0], "wandb_finish": [0.0, 0.0]}

    def timed(key, fn):
        def wrapper(*a, **k):
            w, c = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                phases[key][0] += time.perf_counter() - w
                phases[key][1] += time.process_time() - c
        return wrapper

    runner.tasks_from_config = timed("tasks", runner.tasks_from_config)
    featurize.Featurizer.__call__ = timed("features", featurize.Featurizer.__call__)
    record.WandbLogger._ready = timed("wandb_init", record.WandbLogger._ready)
    record.WandbLogger.finish = timed("wandb_finish", record.WandbLogger.finish)
    evals = []
    orig_eval = runner.evaluate_tasks

    def evaluate_tasks(*a, **k):
        for row in orig_eval(*a, **k):
            evals.append(row["eval_time_s"])
            yield row

    runner.evaluate_tasks = evaluate_tasks
    import contextlib
    import io

    import run  # run.py: its job() is what the command runs after Hydra's composition

    with contextlib.redirect_stdout(io.StringIO()):
        assert run.job(cfg, job_dir, "bench") == 0
    mark("job")
    print(json.dumps({"startup_cpu": start_cpu, "marks": marks, "phases": phases, "evals": evals}))


def measure(repeats: int, tmp: Path) -> dict:
    env = {**os.environ, "MOEE_CACHE_DIR": str(tmp / "cache"), "WANDB_DIR": str(tmp / "wandb")}
    runs = []
    for r in range(repeats + 1):  # the first run builds the tiny model and fills the feature cache
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, str(tmp / f"job{r}")], env=env, capture_output=True,
                              text=True, cwd=tmp)
        wall = time.perf_counter() - t
        if proc.returncode:
            raise RuntimeError(proc.stderr[-3000:])
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["wall"] = wall
        if r:
            runs.append(res)
    return {"runs": runs}


def report(res: dict) -> str:
    runs = res["runs"]

    def med(f):
        return statistics.median(f(r) for r in runs)

    total = med(lambda r: r["wall"])
    rows = [("interpreter start-up (CPU)", None, med(lambda r: r["startup_cpu"]))]
    for i, (name, _, _) in enumerate(runs[0]["marks"][:-1]):
        rows.append((name, med(lambda r, i=i: r["marks"][i][1]), med(lambda r, i=i: r["marks"][i][2])))
    ph = {k: (med(lambda r, k=k: r["phases"][k][0]), med(lambda r, k=k: r["phases"][k][1]))
          for k in runs[0]["phases"]}
    n_tasks = len(runs[0]["evals"])
    ev = med(lambda r: sum(r["evals"]))
    job = med(lambda r: r["marks"][-1][1])
    named = ph["tasks"][0] + ph["features"][0] + ph["wandb_init"][0] + ph["wandb_finish"][0]
    rows += [
        ("the job: task objects (demo tasks)", *ph["tasks"]),
        (f"the job: evaluation of {n_tasks} datasets (incl. cache reads and fusion)", ev, None),
        ("  of which: features from the cache", *ph["features"]),
        ("the job: W&B init (offline)", *ph["wandb_init"]),
        ("the job: W&B finish", *ph["wandb_finish"]),
        ("the job: the rest (config checks, resume plan, result files, table)", job - ev - named + ph["features"][0],
         None),
    ]
    timed_wall = sum(w for _, w, _ in rows if w is not None) - ph["features"][0]
    rows.append(("interpreter start-up and exit (atexit handlers, W&B shutdown): the rest of the wall time",
                 total - timed_wall, None))
    lines = [f"Whole process: **{total:.1f} s** wall (median of {len(runs)} runs after a first one that builds the "
             "tiny model and fills the feature cache).", "", "| item | wall (s) | CPU (s) |", "|---|---|---|"]
    for name, wall, cpu in rows:
        lines.append(f"| {name} | {'' if wall is None else f'{wall:.2f}'} | {'' if cpu is None else f'{cpu:.2f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":  # the child: a bare interpreter, so nothing is imported before it is timed
    child(sys.argv[1])
