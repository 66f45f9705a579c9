"""MoEE fusion: the summed similarity reaches every task type exactly, through stock mteb evaluators."""

import json

import mteb
import numpy as np
import pytest
from conftest import tiny_model_cfg
from scipy.stats import spearmanr

from moee_exp.features.featurize import Featurizer
from moee_exp.features.prompts import TEMPLATES
from moee_exp.scoring.encoder import MoEEEncoder
from moee_exp.scoring.fuse import fuse, rw_block, standardize_block
from moee_exp.scoring.tasks import get_tasks

RNG = np.random.default_rng(0)
FEATS = {"hs": RNG.normal(size=(9, 16)).astype(np.float32), "rw": RNG.normal(size=(9, 3, 4)).astype(np.float32)}


def cos_matrix(x):
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0, 2.5])
def test_moee_sum_representation_carries_the_summed_similarity(alpha):
    emb = fuse(FEATS, "moee_sum", alpha=alpha).astype(np.float64)
    summed = cos_matrix(FEATS["hs"]) + alpha * cos_matrix(FEATS["rw"].reshape(9, -1))
    np.testing.assert_allclose(emb @ emb.T, summed, atol=1e-5)  # what logistic regression / k-means see
    np.testing.assert_allclose(cos_matrix(emb), summed / (1 + alpha), atol=1e-5)  # what cosine evaluators see
    sq_dist = ((emb[:, None] - emb[None]) ** 2).sum(-1)
    np.testing.assert_allclose(sq_dist, 2 * (1 + alpha) - 2 * summed, atol=1e-4)


def test_kinds_and_blocks():
    assert fuse(FEATS, "hs").shape == (9, 16)
    np.testing.assert_allclose(fuse(FEATS, "rw"), FEATS["rw"].reshape(9, -1))
    concat = fuse(FEATS, "moee_concat", standardize="text")
    assert concat.shape == (9, 28)
    np.testing.assert_allclose(concat[:, :16].mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(concat[:, 16:].std(1), 1, atol=1e-5)
    probs = rw_block(FEATS["rw"], "softmax").reshape(9, 3, 4)
    np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-6)
    with pytest.raises(ValueError, match="alpha"):
        fuse(FEATS, "moee_sum", alpha=-0.1)


def test_text_standardization_is_batch_independent_and_batch_mode_is_not():
    x = FEATS["hs"].astype(np.float64)
    np.testing.assert_allclose(standardize_block(x, "text")[:4], standardize_block(x[:4], "text"))
    by_batch = standardize_block(x, "batch", batch_size=4)
    # the public code's z-score: torch's unbiased std + 1e-8
    np.testing.assert_allclose(by_batch[:4], (x[:4] - x[:4].mean(0)) / (x[:4].std(0, ddof=1) + 1e-8))
    assert not np.allclose(by_batch[:4], standardize_block(x[:5], "batch", batch_size=5)[:4])


@pytest.fixture(scope="module")
def featurizer():
    return Featurizer(tiny_model_cfg("tiny"), TEMPLATES["prompteol"], progress=False)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_sts_main_score_is_spearman_of_summed_similarity(featurizer, alpha):
    (task,) = get_tasks(["MoEEDemoSTS"])
    result = mteb.evaluate(MoEEEncoder(featurizer, "moee_sum", alpha=alpha), task, cache=None, show_progress_bar=False)
    got = result.task_results[0].get_score(splits=["test"])

    rows = json.loads(task_data_file(task).read_text())["test"]
    a = featurizer([r["sentence1"] for r in rows])
    b = featurizer([r["sentence2"] for r in rows])

    def cos(x, y):
        x, y = x.reshape(len(x), -1), y.reshape(len(y), -1)
        return (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)

    summed = cos(a["hs"], b["hs"]) + alpha * cos(a["rw"], b["rw"])
    expected = spearmanr(summed, [r["score"] for r in rows]).statistic
    assert got == pytest.approx(expected, abs=1e-6)


def task_data_file(task):
    from moee_exp.scoring.demo_tasks import DATA_DIR

    return DATA_DIR / task.file


@pytest.mark.parametrize("task_name", ["MoEEDemoClassification", "MoEEDemoClustering"])
def test_classification_and_clustering_see_the_summed_similarity(featurizer, task_name):
    """The vectors mteb's logistic regression / k-means receive have inner products cos HS + alpha cos RW."""
    alpha = 0.4
    seen = []

    class Spy(MoEEEncoder):
        def encode(self, inputs, **kw):
            texts = [t for batch in inputs for t in batch["text"]]
            emb = super().encode([{"text": texts}], **kw)
            seen.append((texts, emb))
            return emb

    (task,) = get_tasks([task_name])
    mteb.evaluate(Spy(featurizer, "moee_sum", alpha=alpha), task, cache=None, show_progress_bar=False)
    assert seen
    for texts, emb in seen:
        feats = featurizer(texts)
        summed = cos_matrix(feats["hs"]) + alpha * cos_matrix(feats["rw"].reshape(len(texts), -1))
        np.testing.assert_allclose(emb.astype(np.float64) @ emb.T, summed, atol=1e-4)
