"""Similarity weights of MoEE(sum): the α of cos(HS) + α·cos(RW) that each task is scored with (`weights` group).

- fixed, grid: the configured ``weights.alpha`` (grid sweeps it under -m).
- auto: chosen from the features alone, never from a label or a score, once per model × prompt (criterion
  ``calibration``, the default) or once per model × prompt × task (``spread``):

      α = sd(cos HS) / sd(cos RW)    over the pairs of a fixed-size, hash-chosen sample of distinct texts,

  so that cos HS and α·cos RW vary equally over pairs of texts and neither similarity drowns the other (they live
  on very different scales). ``calibration`` takes the texts of the bundled demo tasks; ``spread`` the texts of the
  task being scored, every split, labels never read (``task_texts``). Degenerate inputs (fewer than two
  distinct texts, a similarity that does not vary) give α = 1, the paper's unweighted sum.
- dev: the α of ``weights.grid`` with the best main score on held-out labelled data that is not the evaluation
  split (``dev_task``); a task without such data gets the auto α, and its row says so.

mteb calls encode() several times per task (STS: both sides; Retrieval: queries then corpus; Classification:
train then test), so α is chosen *before* the task is scored (``AlphaChooser.__call__``) and every call of the task
uses it.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from ..checks import Checked, choice
from ..errors import ConfigError
from .fuse import fuse, l2_normalize

log = logging.getLogger(__name__)

OPTIONS = ("fixed", "grid", "auto", "dev")
CRITERIA = ("spread", "calibration")


@dataclass
class WeightsConfig(Checked):
    """How MoEE(sum)'s similarity weight α (similarity = cos HS + α cos RW) is chosen: moee_exp.scoring.weights."""

    group = "weights"

    name: str = field(default="fixed", metadata=choice(OPTIONS))  # fixed | grid | auto | dev: each row's `weights`
    alpha: float = 1.0  # fixed, grid: this job's α (grid sweeps it under -m); auto, dev: unused
    # auto: calibration (per model x prompt, fixed unlabeled texts) | spread (per task)
    criterion: str = field(default="calibration", metadata=choice(CRITERIA))
    sample: int = 512  # auto: at most this many distinct texts (picked by hash) whose pairs measure the spreads
    grid: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(1, 11)])  # dev: candidates
    dev_fraction: float = 0.2  # dev, Classification: share of the training split held out to score the grid

    def check(self) -> None:
        if self.alpha < 0:
            raise ConfigError(f"weights.alpha={self.alpha} must be >= 0 (it weights cos(RW) in MoEE(sum))")
        if not self.grid or min(self.grid) < 0:
            raise ConfigError(f"weights.grid={list(self.grid)} must be a non-empty list of alphas >= 0")
        if self.sample < 2:
            raise ConfigError(f"weights.sample={self.sample} must be >= 2 (texts whose pairs measure the spreads)")
        if not 0 < self.dev_fraction < 1:
            raise ConfigError(f"weights.dev_fraction={self.dev_fraction} must be between 0 and 1")

    @property
    def alpha_label(self) -> float | str:
        """The job's α: a number for fixed / grid, the option's name for auto / dev (chosen per task)."""
        return float(self.alpha) if self.name in ("fixed", "grid") else self.name
# Columns that hold what a task is scored against, never read by auto (besides ids, which are not texts).
NOT_TEXT = {"label", "labels", "label_text", "score", "scores", "gold_score", "relevance", "relevant_docs",
            "id", "_id", "ids", "query-id", "corpus-id", "query_id", "corpus_id", "doc_id", "top_ranked", "lang"}
DEV_SPLITS = ("validation", "dev", "val", "train")  # held-out labelled splits, most specific first
MIN_SPREAD = 1e-6  # a cosine spread below this is "does not vary" (float32 rounding of identical vectors)


# ---------------------------------------------------------------- the texts of a task, labels never read


def _strings(value, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _strings(v, out)
    elif isinstance(value, Mapping):  # a corpus row {"title": ..., "text": ...}
        for k, v in value.items():
            if k not in NOT_TEXT:
                _strings(v, out)


def _datasets(node, out: list) -> None:
    """Every datasets.Dataset under a task's dataset (subsets → splits → Dataset, or RetrievalSplitData dicts)."""
    from datasets import Dataset

    if isinstance(node, Dataset):
        out.append(node)
    elif isinstance(node, Mapping):
        for key, value in node.items():
            if key not in NOT_TEXT:
                _datasets(value, out)


def _label_columns(task) -> set[str]:
    names = {getattr(task, a, None) for a in ("label_column_name",)}
    return {n for n in names if isinstance(n, str)} | NOT_TEXT


def task_texts(task) -> list[str]:
    """Every text of every split of ``task`` (loaded if needed), label and id columns skipped."""
    if not task.data_loaded:
        task.load_data()
    skip, found, texts = _label_columns(task), [], []
    _datasets(task.dataset, found)
    for ds in found:
        for column in ds.column_names:
            if column not in skip:
                _strings(list(ds[column]), texts)
    return texts


def sample_texts(texts, n: int) -> list[str]:
    """At most ``n`` distinct texts, chosen by their sha256: the same set whatever the order or repetition."""
    distinct = {t for t in texts if isinstance(t, str)}
    return sorted(distinct, key=lambda t: hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest())[:n]


# ---------------------------------------------------------------- the criterion


def _pair_cosines(x: np.ndarray) -> np.ndarray:
    x = l2_normalize(x.astype(np.float64))
    return (x @ x.T)[np.triu_indices(len(x), k=1)]


def spread_alpha(features: Mapping[str, np.ndarray], **emb) -> tuple[float, dict]:
    """α = sd(cos HS) / sd(cos RW) over all pairs of the given texts' features, with the blocks fuse() would use
    (``emb``: rw_activation, standardize, hs_feature, rw_feature). 1.0 when that is undefined."""
    emb = {k: v for k, v in emb.items() if k not in ("kind", "alpha")}
    n = len(features[emb.get("hs_feature", "hs")])
    info = {"n_texts": n, "n_pairs": n * (n - 1) // 2}
    if n < 2:
        return 1.0, {**info, "fallback": "fewer than 2 distinct texts"}
    hs, rw = fuse(features, "hs", **emb), fuse(features, "rw", **emb)
    sd_hs, sd_rw = float(np.std(_pair_cosines(hs))), float(np.std(_pair_cosines(rw)))
    info.update(sd_cos_hs=sd_hs, sd_cos_rw=sd_rw)
    if not (np.isfinite(sd_hs) and np.isfinite(sd_rw)) or sd_hs < MIN_SPREAD or sd_rw < MIN_SPREAD:
        return 1.0, {**info, "fallback": "a similarity does not vary over the pairs"}
    return sd_hs / sd_rw, info


# ---------------------------------------------------------------- dev: held-out labelled data


def _split_names(task) -> list[str]:
    ds = task.dataset
    subsets = list(getattr(task, "hf_subsets", None) or [])
    if isinstance(ds, Mapping) and subsets and all(s in ds for s in subsets):
        return sorted({split for s in subsets for split in ds[s]})
    return list(ds) if isinstance(ds, Mapping) else []


def _map_subsets(task, fn) -> dict:
    ds = task.dataset
    subsets = list(getattr(task, "hf_subsets", None) or [])
    if subsets and all(s in ds for s in subsets) and not any(s in ds for s in ("train", "test")):
        return {s: fn(ds[s]) for s in subsets}
    return fn(ds)


def dev_task(task, fraction: float = 0.2):
    """(a copy of ``task`` whose evaluation split is held-out labelled data, that split's name) or (None, reason).

    Classification: ``fraction`` of the training split, picked by text hash, is scored with a classifier fit on
    the rest (the evaluation split is never touched). Other types: a validation / dev / train split of the loaded
    data that is not an evaluation split.
    """
    from datasets import DatasetDict
    from mteb.abstasks.classification import AbsTaskClassification

    if not task.data_loaded:
        task.load_data()
    evals = set(task.eval_splits)
    if isinstance(task, AbsTaskClassification):
        train_name, column = task.train_split, task.input_column_name
        if train_name in evals or train_name not in _split_names(task) or not isinstance(column, str):
            return None, "no training split apart from the evaluation split"

        def held_out(splits):
            train = splits[train_name]
            keys = [hashlib.sha256(f"{t}\0{i}".encode("utf-8", "surrogatepass")).digest()
                    for i, t in enumerate(train[column])]
            order = sorted(range(len(keys)), key=keys.__getitem__)
            n_dev = max(1, round(fraction * len(order)))
            fit, dev = sorted(order[n_dev:]), sorted(order[:n_dev])
            return DatasetDict({train_name: train.select(fit), "dev": train.select(dev)})

        dev = copy.copy(task)
        dev.dataset = _map_subsets(task, held_out)
        return dev.filter_eval_splits(["dev"]), f"{train_name}[{fraction:g} held out]"
    for name in DEV_SPLITS:
        if name in _split_names(task) and name not in evals:
            return copy.copy(task).filter_eval_splits([name]), name
    return None, "no labelled split apart from the evaluation split"


# ---------------------------------------------------------------- per task


def identity(weights: Mapping) -> dict:
    """The weights settings that change a score (moee_exp.jobs.resume's row key): only what the option reads."""
    w = dict(weights)
    keys = {"fixed": ["alpha"], "grid": ["alpha"], "auto": ["criterion", "sample"],
            "dev": ["grid", "dev_fraction", "criterion", "sample"]}[w["name"]]
    out = {"name": w["name"], **{k: w[k] for k in keys}}
    if "criterion" in keys and w["criterion"] == "calibration":
        from .demo_tasks import (
            DEMO_TASKS,  # mteb's task classes: not imported by the config checks (jobs.config)
        )

        out["calibration_data"] = sorted(str(t.metadata.dataset["revision"]) for t in DEMO_TASKS.values())
    return out


_calibration: dict[str, tuple[float, dict]] = {}  # α per model × prompt × emb blocks, computed once per process


def calibration_texts() -> list[str]:
    from .demo_tasks import get_demo_tasks  # (as above)

    return [t for task in get_demo_tasks() for t in task_texts(task)]


class AlphaChooser:
    """Called with each task before it is scored: sets the encoder's α and returns the row fields that record it.

    ``score(task, split)`` returns the task's main score on ``split`` with the encoder as it is (dev only).
    """

    def __init__(self, weights: WeightsConfig | Mapping, emb: Mapping, encoder, featurizer,
                 score: Callable | None = None, calibration_key: str = ""):
        self.w = weights if isinstance(weights, WeightsConfig) else WeightsConfig(**weights)
        self.emb, self.encoder, self.featurizer = dict(emb), encoder, featurizer
        self.score = score
        # calibration α is cached per model × prompt: the runner passes its model/prompt identity; by default the
        # featurizer's own settings (never a key shared by two models)
        self.calibration_key = calibration_key or repr((
            getattr(featurizer, "model", id(featurizer)), getattr(featurizer, "template", None),
            getattr(featurizer, "normalize", None)))

    @property
    def fixed(self) -> bool:
        return self.w.name in ("fixed", "grid")

    def _features(self, texts, desc):
        before = self.featurizer.n_truncated
        try:
            return self.featurizer(texts, desc=desc)
        finally:
            self.featurizer.n_truncated = before  # the job counts truncation of the texts it scores, not of these

    def auto(self, task) -> tuple[float, str, dict]:
        criterion, n = self.w.criterion, int(self.w.sample)
        if criterion == "calibration":
            key = f"{self.calibration_key}|{n}|{sorted(self.emb.items())}"
            if key not in _calibration:
                texts = sample_texts(calibration_texts(), n)
                _calibration[key] = spread_alpha(self._features(texts, "calibration/alpha"), **self.emb)
            alpha, info = _calibration[key]
        else:
            texts = sample_texts(task_texts(task), n)
            if not texts:
                return 1.0, f"auto:{criterion}", {"n_texts": 0, "n_pairs": 0, "fallback": "no texts"}
            alpha, info = spread_alpha(self._features(texts, f"{task.metadata.name}/alpha"), **self.emb)
        return alpha, f"auto:{criterion}", info

    def dev(self, task) -> tuple[float, str, dict]:
        held, where = dev_task(task, float(self.w.dev_fraction))
        if held is None:
            alpha, source, info = self.auto(task)
            return alpha, f"{source} (dev: {where})", info
        scores = {}
        try:
            for a in self.w.grid:
                self.encoder.fuse_kwargs["alpha"] = float(a)
                scores[float(a)] = float(self.score(held, held.eval_splits[0]))
        except Exception as err:  # noqa: BLE001  e.g. a held-out part too small for mteb's evaluator
            log.warning("%s: scoring the grid on %s failed (%s: %s); using the auto alpha", task.metadata.name, where,
                        err.__class__.__name__, err)
            alpha, source, info = self.auto(task)
            return alpha, f"{source} (dev: scoring {where} failed: {err.__class__.__name__})", info
        best = max(scores, key=lambda a: (scores[a], -abs(a - 1.0)))  # ties: the one nearest the unweighted sum
        return best, f"dev:{where}", {"dev_scores": scores}

    def __call__(self, task) -> dict:
        name = self.w.name
        if self.fixed:
            alpha, source, info = float(self.w.alpha), "config", {}
        else:
            start = time.perf_counter()
            alpha, source, info = getattr(self, name)(task)
            info = {**info, "time_s": round(time.perf_counter() - start, 3)}
            log.info("%s: alpha = %.4g (%s)", task.metadata.name, alpha, source)
        self.encoder.fuse_kwargs["alpha"] = float(alpha)
        return {"alpha": float(alpha), "weights": name, "alpha_source": source, "alpha_info": info}
