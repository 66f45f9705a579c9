"""No combination fails after compute: protocol x emb x weights x task class x tiny family, on generated data.

The full product (2 protocols x 4 embs x 4 weights x 11 task classes x 6 families) is thousands of jobs; this runs a
covering sample of it, in-process (run.job, as `python run.py ...` does after Hydra's parsing; tests/test_fuzz.py):

- every value of every group appears at least once (protocol, emb, weights, model = each conf/model/tiny*.yaml);
- every task class of `tasks=paper` and `tasks=mteb_eng_v2` appears (a class: task type x mteb AbsTask class x main
  score x evaluator x hierarchical labels, read from the task objects, so a new kind in either set shows up here);
- protocol=paper x emb=moee_sum (the public code's scoring, a code path per task type outside mteb.evaluate) runs
  every task class, mteb_eng_v2's under the benchmark's own definition (`tasks=mteb_eng_v2`);
- every pair of protocol x emb, protocol x task type and emb x task type appears.

A combination that cannot run must be refused before the model loads, in seconds, with one `error:` line
(``REFUSED``: what should be refused and the words its line must hold); every other job must score every task.
Today every combination runs (protocol=paper's MoEE(sum) scores Retrieval by the summed similarity and mteb 2's
clustering layouts, moee_exp.scoring.paper_scoring), so REFUSED is empty. 44 datasets in 10 jobs: ~25 s on one core.
"""

from __future__ import annotations

import functools
import json
import math
import time
from itertools import product

import yaml
from conftest import ROOT
from jobs import job_in_process

PROTOCOLS = ["paper", "clean"]
EMBS = ["hs", "rw", "moee_concat", "moee_sum"]
WEIGHTS = sorted(p.stem for p in (ROOT / "conf/weights").glob("*.yaml"))
FAMILIES = sorted(p.stem for p in (ROOT / "conf/model").glob("tiny*.yaml"))
# (protocol, emb, weights) -> words its one refusal line must hold (none today: every combination runs)
REFUSED: dict[tuple[str, str, str], str] = {}


def _task_set(name: str) -> dict:
    return yaml.safe_load((ROOT / f"conf/tasks/{name}.yaml").read_text())


def task_class(task) -> tuple:
    """What decides how a task is loaded, generated and scored (see the module docstring)."""
    from moee_exp.scoring.synthetic_tasks import _hierarchical

    base = next(c.__name__ for c in type(task).__mro__ if c.__module__.startswith("mteb.abstasks"))
    evaluator = getattr(getattr(task, "evaluator", None), "__name__", None)
    return (task.metadata.type, base, task.metadata.main_score, evaluator, _hierarchical(task))


@functools.cache
def representatives() -> dict[str, dict[tuple, str]]:
    """{task set: {task class: its first task}}, for tasks=paper and tasks=mteb_eng_v2."""
    from moee_exp.scoring.tasks import get_tasks

    out = {}
    for name in ("paper", "mteb_eng_v2"):
        spec = _task_set(name)
        out[name] = {}
        for task in get_tasks(spec["names"], benchmark=spec.get("benchmark")):
            out[name].setdefault(task_class(task), task.metadata.name)
    return out


def plan() -> list[dict]:
    """The sampled jobs: {protocol, emb, weights, model, tasks (set), names}."""
    reps = representatives()
    paper, v2 = reps["paper"], reps["mteb_eng_v2"]
    paper_only = [n for k, n in paper.items() if k not in v2]  # mteb 1.x clustering sets, SummEval's old evaluator
    by_type = {k[0]: n for k, n in paper.items()}
    every_type = [*paper.values(), *(n for k, n in v2.items() if k[0] not in by_type)]  # (+ Retrieval)
    one = [by_type["STS"]]
    jobs = [
        # the public code's MoEE(sum) scoring (a code path per task type) on every task class of both sets
        dict(protocol="paper", emb="moee_sum", weights="fixed", tasks="mteb_eng_v2", names=list(v2.values())),
        dict(protocol="paper", emb="moee_sum", weights="auto", tasks="paper", names=paper_only),
        # dev: Classification holds out training rows; STS has no labelled split apart from test (auto's α)
        dict(protocol="paper", emb="moee_sum", weights="dev", tasks="paper", names=[by_type["Classification"], *one]),
        # stock mteb evaluators: each emb kind on every task type, both protocols across them
        dict(protocol="clean", emb="moee_sum", weights="grid", tasks="paper", names=every_type),
        dict(protocol="clean", emb="hs", weights="fixed", tasks="paper", names=every_type),
        dict(protocol="paper", emb="rw", weights="grid", tasks="paper", names=every_type),
        dict(protocol="clean", emb="moee_concat", weights="auto", tasks="paper", names=every_type),
        # the remaining protocol x emb pairs, on one task each
        dict(protocol="paper", emb="hs", weights="dev", tasks="paper", names=one),
        dict(protocol="clean", emb="rw", weights="fixed", tasks="paper", names=one),
        dict(protocol="paper", emb="moee_concat", weights="fixed", tasks="paper", names=one),
    ]
    families = [*FAMILIES, *FAMILIES]
    for i, job in enumerate(jobs):  # every tiny family, in turn; auto and dev share one (its calibration α)
        job["model"] = families[i - (i >= 2)]
    return jobs


def _types(names) -> set[str]:
    import mteb

    return {mteb.get_task(n).metadata.type for n in names}


def test_the_sample_covers_every_value_every_task_class_and_every_pair():
    jobs = plan()
    reps = representatives()
    for group, values in (("protocol", PROTOCOLS), ("emb", EMBS), ("weights", WEIGHTS), ("model", FAMILIES)):
        assert {j[group] for j in jobs} == set(values), group
    class_of = {n: k for classes in reps.values() for k, n in classes.items()}
    ran = {class_of[n] for j in jobs if (j["protocol"], j["emb"]) == ("paper", "moee_sum") for n in j["names"]}
    for task_set, classes in reps.items():  # every class of each set, under the paper's MoEE(sum) scoring
        assert set(classes) <= ran, task_set
    assert {j["tasks"] for j in jobs if j["emb"] == "moee_sum"} == {"paper", "mteb_eng_v2"}
    types = {k[0] for classes in reps.values() for k in classes}
    assert "Retrieval" in types and len(types) == 7
    pairs = {(j["protocol"], j["emb"], t) for j in jobs for t in _types(j["names"])}
    assert {(p, e) for p, e, _ in pairs} == set(product(PROTOCOLS, EMBS))
    assert {(p, t) for p, _, t in pairs} == set(product(PROTOCOLS, types))
    assert {(e, t) for _, e, t in pairs} == set(product(EMBS, types))
    clustering = {k[1:] for classes in reps.values() for k in classes if k[0] == "Clustering"}
    assert len(clustering) == 3  # mteb 1.x sets, mteb 2's one document per row, and hierarchical labels


def overrides_of(job: dict) -> list[str]:
    return [f"protocol={job['protocol']}", f"emb={job['emb']}", f"weights={job['weights']}", f"model={job['model']}",
            f"tasks={job['tasks']}", f"tasks.names=[{','.join(job['names'])}]", "tasks.data=synthetic",
            "tasks.synthetic.size=small", "logger=none", "progress=false"]


def test_every_sampled_combination_runs_or_is_refused_at_once(tmp_path):
    from moee_exp.features import featurize

    failures = []
    for i, job in enumerate(plan()):
        job_dir = tmp_path / f"job{i}"
        before = featurize.load_count  # models loaded so far in this process
        start = time.perf_counter()
        code, err = job_in_process(job_dir, *overrides_of(job))
        seconds = time.perf_counter() - start
        what = f"{job}: exit {code}\n{err[-2000:]}"
        reason = REFUSED.get((job["protocol"], job["emb"], job["weights"]))
        if reason is not None:  # refused before the model loads, in one line naming why
            lines = [ln for ln in err.splitlines() if ln.strip()]
            ok = code == 2 and len(lines) == 1 and lines[0].startswith("error:") and reason in lines[0]
            if not (ok and featurize.load_count == before and seconds < 10):
                failures.append(f"not refused at once: {what}")
            continue
        if code != 0:
            failures.append(what)
            continue
        rows = {r["task"]: r for r in (json.loads(p.read_text()) for p in (job_dir / "results").glob("*.json"))}
        if set(rows) != set(job["names"]):
            failures.append(f"{what}\nscored {sorted(rows)}")
            continue
        for row in rows.values():
            assert row["task_data"] == "synthetic" and row["protocol"] == job["protocol"], row
            assert isinstance(row["main_score"], float) and math.isfinite(row["main_score"]), (job, row)
            if job["emb"] == "moee_sum" and job["protocol"] == "paper" and row["task_type"] == "Retrieval":
                # the public code has no Retrieval: the row says it was ranked by the summed similarity
                assert {s.get("scoring") for s in row["scores"]} == {"summed_similarity"}, row
                assert row["main_score_name"] == "ndcg_at_10"
    assert not failures, "\n\n".join(failures)
