"""Similarity weights (moee_exp.scoring.weights): auto's α needs no label and no score, is deterministic, order-invariant and
finite on degenerate inputs; dev scores the grid on held-out data only; grid/fixed give the right number of jobs."""

import json
from pathlib import Path

import mteb
import numpy as np
import pytest
from conftest import tiny_model_cfg
from datasets import DatasetDict
from jobs import cli, compose, wandb_summary

from moee_exp.features.featurize import Featurizer
from moee_exp.features.prompts import TEMPLATES
from moee_exp.scoring import weights as W
from moee_exp.scoring.demo_tasks import (
    MoEEDemoClassification,
    MoEEDemoClustering,
    MoEEDemoSTS,
)
from moee_exp.scoring.encoder import MoEEEncoder

EMB = {"rw_activation": "logits", "standardize": "none", "standardize_batch_size": 128, "hs_feature": "hs",
       "rw_feature": "rw"}
AUTO = {"name": "auto", "alpha": 1.0, "criterion": "spread", "sample": 512, "grid": [0.1, 0.5, 1.0],
        "dev_fraction": 0.2}


@pytest.fixture(scope="module")
def featurizer():
    return Featurizer(tiny_model_cfg("tiny"), TEMPLATES["prompteol"], progress=False)


def chooser(featurizer, **weights):
    encoder = MoEEEncoder(featurizer, "moee_sum", alpha=1.0, **EMB)
    return W.AlphaChooser({**AUTO, **weights}, EMB, encoder, featurizer), encoder


def loaded(task_cls, transform=None):
    task = task_cls()
    task.load_data()
    if transform:
        task.dataset = DatasetDict({split: transform(ds) for split, ds in task.dataset.items()})
    return task


def reference_alpha(features):
    """sd(cos HS)/sd(cos RW) over every pair, written out pair by pair (the independent reference)."""
    hs = features["hs"].astype(np.float64)
    rw = features["rw"].astype(np.float64).reshape(len(hs), -1)

    def cos(x, i, j):
        return x[i] @ x[j] / np.linalg.norm(x[i]) / np.linalg.norm(x[j])

    pairs = [(i, j) for i in range(len(hs)) for j in range(i + 1, len(hs))]
    return np.std([cos(hs, i, j) for i, j in pairs]) / np.std([cos(rw, i, j) for i, j in pairs])


def test_auto_alpha_equalises_the_spreads_and_matches_a_pairwise_reference(featurizer):
    texts = W.sample_texts(W.task_texts(loaded(MoEEDemoSTS)), 512)
    feats = featurizer(texts)
    alpha, info = W.spread_alpha(feats, **EMB)
    assert alpha == pytest.approx(reference_alpha(feats), rel=1e-9)
    assert info["n_texts"] == 80 and "fallback" not in info
    hs, rw = feats["hs"].astype(np.float64), feats["rw"].reshape(80, -1).astype(np.float64)
    cos = lambda x: (lambda n: (n @ n.T)[np.triu_indices(80, 1)])(x / np.linalg.norm(x, axis=1, keepdims=True))
    assert np.std(cos(hs)) == pytest.approx(np.std(alpha * cos(rw)))  # the defining property


def test_auto_is_deterministic_and_reads_no_label(featurizer):
    pick, _ = chooser(featurizer)
    alphas = {name: pick(loaded(cls))["alpha"] for name, cls in
              [("sts", MoEEDemoSTS), ("cls", MoEEDemoClassification), ("clu", MoEEDemoClustering)]}
    assert pick(loaded(MoEEDemoSTS))["alpha"] == alphas["sts"]  # same task again: same α, bit for bit
    rng = np.random.default_rng(0)

    def shuffled(column, relabel=None):
        def f(ds):
            values = list(ds[column])
            values = [values[i] for i in rng.permutation(len(values))]
            if relabel:
                values = [relabel(v) for v in values]
            return ds.remove_columns(column).add_column(column, values)
        return f

    # labels shuffled, then replaced by other strings: a criterion that read them would move
    cls = pick(loaded(MoEEDemoClassification, shuffled("label", lambda v: f"class {v[::-1]}")))
    assert cls["alpha"] == alphas["cls"] and cls["weights"] == "auto" and cls["alpha_source"] == "auto:spread"
    clu = pick(loaded(MoEEDemoClustering, shuffled("labels", lambda v: [f"topic-{x}" for x in reversed(v)])))
    assert clu["alpha"] == alphas["clu"]
    sts = pick(loaded(MoEEDemoSTS, shuffled("score", lambda v: 5.0 - v)))
    assert sts["alpha"] == alphas["sts"]
    assert len(set(alphas.values())) == 3  # per task: the tasks' own texts do move it


def test_auto_is_invariant_to_the_order_of_texts(featurizer):
    pick, _ = chooser(featurizer)
    base = pick(loaded(MoEEDemoSTS))["alpha"]
    reversed_rows = pick(loaded(MoEEDemoSTS, lambda ds: ds.select(range(len(ds) - 1, -1, -1))))["alpha"]
    swapped = pick(loaded(MoEEDemoSTS, lambda ds: ds.rename_columns({"sentence1": "s", "sentence2": "sentence1"})
                          .rename_columns({"s": "sentence2"})))["alpha"]
    assert base == reversed_rows == swapped
    # a sample smaller than the task: the same texts are picked whatever their order or repetition
    texts = W.task_texts(loaded(MoEEDemoSTS))
    assert W.sample_texts(texts, 10) == W.sample_texts(texts[::-1] + texts[:5], 10)
    small, _ = chooser(featurizer, sample=10)
    assert small(loaded(MoEEDemoSTS))["alpha"] == small(loaded(MoEEDemoSTS, lambda ds: ds.shuffle(seed=1)))["alpha"]


def test_auto_is_finite_on_degenerate_inputs(featurizer):
    rng = np.random.default_rng(1)
    hs, rw = rng.normal(size=(6, 16)), rng.normal(size=(6, 2, 4))
    cases = {
        "identical texts": featurizer(["The same text."] * 5),
        "one text": featurizer(["Only one text."]),
        "no text": {"hs": np.zeros((0, 16)), "rw": np.zeros((0, 2, 4))},
        "all RW equal": {"hs": hs, "rw": np.broadcast_to(rw[:1], rw.shape).copy()},
        "all HS equal": {"hs": np.broadcast_to(hs[:1], hs.shape).copy(), "rw": rw},
        "zero RW": {"hs": hs, "rw": np.zeros_like(rw)},
    }
    for name, feats in cases.items():
        alpha, info = W.spread_alpha(feats, **EMB)
        assert np.isfinite(alpha) and alpha == 1.0 and "fallback" in info, name
    # through a task: every text the same, one pair
    pick, _ = chooser(featurizer)
    same = pick(loaded(MoEEDemoSTS, lambda ds: ds.select([0]).map(lambda r: {"sentence2": r["sentence1"]})))
    assert same["alpha"] == 1.0 and same["alpha_info"]["fallback"]


def test_calibration_is_one_alpha_per_model_and_prompt(featurizer):
    pick, _ = chooser(featurizer, criterion="calibration", sample=64)
    a, b = pick(loaded(MoEEDemoSTS)), pick(loaded(MoEEDemoClassification))
    assert a["alpha"] == b["alpha"] and a["alpha_source"] == "auto:calibration" and np.isfinite(a["alpha"])
    assert a["alpha_info"]["n_texts"] == 64 and len(set(W.calibration_texts())) > 300  # the demo tasks' texts


def test_auto_covers_every_text_mock_task_type(featurizer):
    """mteb's own mock tasks (every text task type, multilingual subsets, retrieval corpora): texts found, α finite."""
    from mteb.mocks.mock_run import get_compatible_mock_tasks

    encoder = MoEEEncoder(featurizer, "moee_sum", alpha=1.0, **EMB)
    pick = W.AlphaChooser(AUTO, EMB, encoder, featurizer)
    types = set()
    for task in get_compatible_mock_tasks(encoder):
        row = pick(task)
        assert np.isfinite(row["alpha"]) and row["alpha_info"]["n_texts"] >= 2, task.metadata.name
        types.add(task.metadata.type)
    assert {"Classification", "Clustering", "STS", "PairClassification", "Retrieval", "Reranking",
            "Summarization"} <= types


def test_dev_scores_the_grid_on_held_out_training_data_only(featurizer, monkeypatch):
    task = loaded(MoEEDemoClassification)
    held, where = W.dev_task(task, 0.25)
    assert where == "train[0.25 held out]" and list(held.eval_splits) == ["dev"]
    fit, dev = held.dataset["train"]["text"], held.dataset["dev"]["text"]
    assert len(dev) == 12 and not set(fit) & set(dev) and sorted([*fit, *dev]) == sorted(task.dataset["train"]["text"])
    assert not set(dev) & set(task.dataset["test"]["text"])  # the evaluation split is never touched
    seen = []
    encoder = MoEEEncoder(featurizer, "moee_sum", alpha=1.0, **EMB)

    def score(t, split):
        seen.append((split, encoder.fuse_kwargs["alpha"]))
        return {0.1: 0.3, 0.5: 0.9, 1.0: 0.6}[encoder.fuse_kwargs["alpha"]]

    pick = W.AlphaChooser({**AUTO, "name": "dev"}, EMB, encoder, featurizer, score=score)
    row = pick(task)
    assert seen == [("dev", 0.1), ("dev", 0.5), ("dev", 1.0)]
    assert row["alpha"] == 0.5 == encoder.fuse_kwargs["alpha"] and row["alpha_source"].startswith("dev:train")
    # no labelled split apart from test: the auto α, and the row says why
    sts = pick(loaded(MoEEDemoSTS))
    assert sts["alpha_source"].startswith("auto:spread (dev: no labelled split") and sts["weights"] == "dev"


def test_dev_uses_a_validation_split_with_mteb(featurizer):
    """An STS task with a validation split: dev scores it through mteb, test stays the reported split."""
    task = loaded(MoEEDemoSTS)
    data = task.dataset["test"]
    task.dataset = DatasetDict({"test": data.select(range(20)), "validation": data.select(range(20, 40))})
    encoder = MoEEEncoder(featurizer, "moee_sum", alpha=1.0, **EMB)
    from moee_exp.scoring.evaluate import main_score

    pick = W.AlphaChooser({**AUTO, "name": "dev"}, EMB, encoder, featurizer,
                          score=lambda t, split: main_score(encoder, t, split))
    row = pick(task)
    assert row["alpha_source"] == "dev:validation" and set(row["alpha_info"]["dev_scores"]) == {0.1, 0.5, 1.0}
    scores = row["alpha_info"]["dev_scores"]
    assert row["alpha"] == max(scores, key=scores.get)
    assert list(task.eval_splits) == ["test"]  # the task itself still reports test
    # the grid's score at α=0.5 is mteb's main score of a task whose test rows are the validation rows
    other = loaded(MoEEDemoSTS, lambda ds: ds.select(range(20, 40)))
    encoder.fuse_kwargs["alpha"] = 0.5
    ref = mteb.evaluate(encoder, other, cache=None, show_progress_bar=False).task_results[0]
    assert scores[0.5] == pytest.approx(ref.get_score(splits=["test"]))


def job_rows(base: Path):
    return [[json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] for d in sorted(base.glob("**/results"))]


def test_grid_carries_the_alpha_sweep_and_the_other_options_do_not():
    grid = "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0"
    for overrides, sweeps in ((["weights=grid"], True), (["emb=moee_sum"], True), (["weights=fixed"], False),
                              (["weights=auto"], False), (["weights=dev"], False), ([], False),
                              (["emb=moee_sum", "weights=fixed"], False)):
        params = compose(*overrides, hydra=True).hydra.sweeper.params or {}
        assert (params.get("weights.alpha") == grid) == sweeps, overrides


def test_headline_sweep_is_ten_jobs_with_ten_distinct_alphas(tmp_cwd):
    """`-m emb=moee_sum` (emb=moee_sum selects weights=grid): one job per α in 0.1..1.0, each α recorded."""
    proc = cli("-m", "emb=moee_sum", "tasks.names=[MoEEDemoSTS]", "logger=none", "progress=false", "predictions=[]",
               cwd=tmp_cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = job_rows(tmp_cwd / "multirun")
    rows = [r for job in jobs for r in job]
    assert len(jobs) == 10 and {r["weights"] for r in rows} == {"grid"}
    assert sorted(r["alpha"] for r in rows) == pytest.approx([0.1 * i for i in range(1, 11)])
    assert len({r["main_score"] for r in rows}) > 1  # each α reaches the fusion
    header = next((tmp_cwd / "multirun").glob("**/results.csv")).read_text().splitlines()[0].split(",")
    assert {"weights", "alpha", "alpha_source", "alpha_info"} <= set(header)


def test_fixed_and_auto_are_one_job_each_and_auto_reaches_wandb(tmp_cwd):
    proc = cli("-m", "emb=moee_sum", "weights=fixed,auto", "weights.alpha=0.3", "tasks.names=[MoEEDemoSTS]",
               "progress=false", "predictions=[]", cwd=tmp_cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = {job[0]["weights"]: job for job in job_rows(tmp_cwd / "multirun")}
    assert sorted(jobs) == ["auto", "fixed"] and all(len(j) == 1 for j in jobs.values())  # 2 values: 2 jobs
    fixed, auto = jobs["fixed"][0], jobs["auto"][0]
    assert fixed["alpha"] == 0.3 and fixed["alpha_source"] == "config"
    assert auto["alpha_source"] == "auto:calibration" and auto["alpha"] != 0.3  # the default criterion
    auto_dir = next(p.parents[1] for p in (tmp_cwd / "multirun").glob("**/results/MoEEDemoSTS.json")
                    if json.loads(p.read_text())["weights"] == "auto")
    logged = wandb_summary(auto_dir)
    assert logged["summary"]["alpha/MoEEDemoSTS"] == pytest.approx(auto["alpha"])
    assert logged["config"]["weights.name"] == "auto"


def test_row_keys_change_with_what_changes_alpha_only():
    """resume: a row is recomputed when the way its α is chosen changes, and only then."""
    from moee_exp.jobs import resume
    from moee_exp.jobs.config import read_job

    def key(*overrides):
        return resume.row_key(resume.job_identity(read_job(compose(*overrides), here=False)))

    auto = key("weights=auto")
    assert auto == key("weights=auto", "weights.alpha=0.3", "weights.grid=[0.5]")  # knobs auto does not read
    assert auto != key("weights=auto", "weights.criterion=spread") != key("weights=auto", "weights.sample=64")
    assert auto != key("weights=fixed") != key("weights.alpha=0.3")
    assert key("weights=dev") != key("weights=dev", "weights.grid=[0.5,1.0]")
    assert key("emb=hs") == key("emb=hs", "weights=auto")  # HS alone has no α


def test_dev_falls_back_to_auto_when_the_held_out_data_cannot_be_scored(featurizer):
    encoder = MoEEEncoder(featurizer, "moee_sum", alpha=1.0, **EMB)

    def score(task, split):
        raise ValueError("only one class in the held-out part")

    row = W.AlphaChooser({**AUTO, "name": "dev"}, EMB, encoder, featurizer, score=score)(loaded(MoEEDemoClassification))
    assert row["alpha_source"] == "auto:spread (dev: scoring train[0.2 held out] failed: ValueError)"
    assert np.isfinite(row["alpha"]) and encoder.fuse_kwargs["alpha"] == row["alpha"]
