"""The six offline demo tasks run through mteb.evaluate and carry a signal a bag-of-words model finds."""

from __future__ import annotations

import math
import os
import re
import tempfile
import zlib

# mteb creates its result cache dir at import time; keep it out of ~/.cache.
os.environ.setdefault("MTEB_CACHE", os.path.join(tempfile.gettempdir(), "moee_exp_test_mteb_cache"))

import mteb  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from mteb.models.abs_encoder import AbsEncoder  # noqa: E402
from mteb.models.model_meta import ModelMeta, ScoringFunction  # noqa: E402

from moee_exp.scoring.demo_tasks import DEMO_TASKS, get_demo_tasks  # noqa: E402

STOPWORDS = set("a an the is are was were be been to of in on at for by and or it its this that with from as i my our".split())


class BagOfWords(AbsEncoder):
    """Deterministic hashed bag of words, L2-normalised."""

    def __init__(self, dim: int = 1024):
        self.dim = dim
        # mteb.evaluate swaps an object lacking `mteb_model_meta` for an empty ModelMeta (no encoding).
        # Pass the enum: create_empty does not validate, and AbsEncoder.similarity tests it with `is`.
        self.mteb_model_meta = ModelMeta.create_empty(
            {"name": "test/bow", "revision": "1", "similarity_fn_name": ScoringFunction.COSINE}
        )

    def embed(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            if word not in STOPWORDS:
                vec[zlib.crc32(word.encode()) % self.dim] += 1.0
        norm = np.linalg.norm(vec)
        return vec / norm if norm else vec

    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
        return np.stack([self.embed(t) for batch in inputs for t in batch["text"]])


# Chance: Spearman 0, accuracy 1/3 (three balanced labels), average precision 0.5 (balanced pairs),
# MAP about 0.5 (1-2 relevant among 4-5 candidates). The bag of words scores about STS 0.67,
# Classification 0.66, PairClassification 1.0, Reranking 0.97, Summarization 0.87, Clustering 0.19
# (no floor: k-means on sparse word counts of 40 sentences is too noisy to be a check).
FLOORS = {
    "MoEEDemoSTS": 0.4,
    "MoEEDemoClassification": 0.45,
    "MoEEDemoPairClassification": 0.75,
    "MoEEDemoReranking": 0.75,
    "MoEEDemoSummarization": 0.5,
}


@pytest.fixture(scope="module")
def scores() -> dict[str, dict]:
    model = BagOfWords()
    out = {}
    for task in get_demo_tasks():
        result = mteb.evaluate(model, task, cache=None, co2_tracker=False, show_progress_bar=False)
        [task_result] = result.task_results
        out[task.metadata.name] = task_result.scores
    return out


def test_task_types_cover_moee_paper():
    types = {cls.metadata.type for cls in DEMO_TASKS.values()}
    assert types == {"STS", "Classification", "Clustering", "PairClassification", "Reranking", "Summarization"}
    assert [t.metadata.name for t in get_demo_tasks()] == list(DEMO_TASKS)
    with pytest.raises(KeyError):
        get_demo_tasks(["NoSuchTask"])


@pytest.mark.parametrize("name", list(DEMO_TASKS))
def test_load_data_is_recallable(name):
    [task] = get_demo_tasks([name])
    task.load_data()
    first = repr(task.dataset)
    task.load_data()
    assert task.data_loaded and repr(task.dataset) == first


@pytest.mark.parametrize("name", list(DEMO_TASKS))
def test_main_score_is_finite(scores, name):
    main = DEMO_TASKS[name].metadata.main_score
    [test_scores] = scores[name]["test"]
    assert main in test_scores and test_scores["main_score"] == test_scores[main]
    assert math.isfinite(test_scores[main])
    if name in FLOORS:
        assert test_scores[main] > FLOORS[name], (name, test_scores[main])
