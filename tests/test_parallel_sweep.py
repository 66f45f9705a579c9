"""Parallel jobs sharing the feature cache: each text is extracted once, and the scores are those of a sequential run.

Two FeatureCache objects on one dir stand for two processes of a sweep (each has its own in-memory index, as a
process would; flock locks of two open files exclude each other within a process as across processes).
"""

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_model_cfg
from jobs import compose

from moee_exp.features.cache import FeatureCache, text_key
from moee_exp.features.featurize import Featurizer

TEXTS = [f"text number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(40)] + ["text number 3 about cats"]


class CountingFeaturizer(Featurizer):
    """Extraction replaced by a slow deterministic function of the text, counting the texts it extracts."""

    def __init__(self, cache, counter):
        super().__init__(tiny_model_cfg(), "{text}", progress=False, cache=cache)
        self.counter = counter

    def _extract(self, texts, desc, instruction=""):
        self.counter.append(len(texts))
        time.sleep(0.3)  # long enough for the other job to miss the same texts meanwhile
        seeds = [int.from_bytes(text_key(t)[:4], "little") for t in texts]
        hs = np.stack([np.random.default_rng(s).standard_normal(8) for s in seeds]).astype(np.float32)
        rw = np.stack([np.random.default_rng(s + 1).standard_normal((2, 4)) for s in seeds]).astype(np.float32)
        return {"hs": hs, "rw": rw}, np.zeros(len(texts), bool)


def run_two_jobs_at_once(cache_dir: Path, lock: bool):
    counter, out = [], {}
    featurizers = [CountingFeaturizer(FeatureCache(cache_dir, lock=lock), counter) for _ in range(2)]
    threads = [threading.Thread(target=lambda i=i: out.__setitem__(i, featurizers[i](TEXTS))) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counter, out


def test_concurrent_jobs_extract_each_text_once_and_read_the_same_features(tmp_path):
    counter, out = run_two_jobs_at_once(tmp_path / "features", lock=True)
    assert sum(counter) == len(set(TEXTS))  # one job extracted, the other waited and read the cache
    reference = CountingFeaturizer(None, [])(TEXTS)  # no cache at all
    for i in (0, 1):
        for name in ("hs", "rw"):
            np.testing.assert_array_equal(out[i][name], reference[name])


def test_without_the_lock_both_jobs_extract(tmp_path):
    counter, out = run_two_jobs_at_once(tmp_path / "features", lock=False)
    assert sum(counter) == 2 * len(set(TEXTS))  # the cost the lock removes
    np.testing.assert_array_equal(out[0]["hs"], out[1]["hs"])


def test_alpha_jobs_run_at_once_on_a_shared_cache_score_as_sequential_jobs_without_it(tmp_path):
    """The real runner: 2 moee_sum jobs at once (threads, as joblib workers would be processes) on one cache dir
    versus the same jobs one after the other without any cache: every score equal to 1e-6."""
    from moee_exp.jobs.runner import run_job

    common = ["tasks.names=[MoEEDemoSTS,MoEEDemoClassification]", "logger=none", "progress=false", "emb=moee_sum"]
    seq = [compose(*common, f"weights.alpha={a}", "cache=off") for a in (0.3, 1.0)]
    par = [compose(*common, f"weights.alpha={a}", f"cache.dir={tmp_path / 'features'}") for a in (0.3, 1.0)]
    expected = [run_job(cfg, tmp_path / f"seq{i}", "seq") for i, cfg in enumerate(seq)]
    got, errors = {}, []

    def job(i):
        try:
            got[i] = run_job(par[i], tmp_path / f"par{i}", "par")
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(2):
        assert [r["task"] for r in got[i]] == [r["task"] for r in expected[i]]
        for a, b in zip(got[i], expected[i]):
            assert a["alpha"] == b["alpha"]
            assert a["main_score"] == pytest.approx(b["main_score"], abs=1e-6), a["task"]


def test_each_classification_task_fits_its_own_sklearn_model():
    """mteb keeps one LogisticRegression on the class and fits it in place; jobs scoring at once in one process
    (the threads above) raced on it (an accuracy of 0.487 for 0.490 once). Each task object now has a clone."""
    from moee_exp.scoring.tasks import get_tasks

    a, b = get_tasks(["MoEEDemoClassification", "MoEEDemoClassification"])
    assert a.evaluator_model is not b.evaluator_model
    assert a.evaluator_model is not type(a).evaluator_model
    assert a.evaluator_model.get_params() == type(a).evaluator_model.get_params()
