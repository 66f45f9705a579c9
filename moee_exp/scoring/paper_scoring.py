"""MoEE(sum) scored as the paper's public code scores it (``--similarity_ensemble --similarity_weights w``).

The public code (tianyi-lab/MoE-Embedding) forks mteb 1.x; with ``--similarity_ensemble`` its evaluators get two
blocks per text, HS and RW (both z-scored per encode batch), besides the embedding of its ``--emb_info`` and combine
them per task type as below (w = alpha). This module computes the same on mteb 2.x tasks; ``fuse.moee_sum`` is the
principled alternative (a true similarity sum everywhere).

- STS: main ``cosine_spearman`` = Spearman(gold, cos_HS + w*cos_RW); ``spearman`` = Spearman(cos_HS) +
  w*Spearman(cos_RW); ``pearson`` / ``cosine_pearson`` / manhattan / euclidean fields: of the emb_info embedding.
- PairClassification: cosine, manhattan and euclidean scores are each sum_HS + w*sum_RW (distances summed as
  distances); "similarity" = the summed cosine; "dot" = dot of the emb_info embedding. Main ``max_ap`` = the largest AP
  of those five. Threshold search as in the fork (no skipping of tied scores, unlike mteb 2.x).
- Reranking: main ``map`` = mean over queries of AP(cos_HS + w*cos_RW); ``mrr`` (@10) and the nAUC fields come from
  the emb_info embedding's cosine (nAUC with mteb 2.x's tie handling).
- Summarization: per machine summary, max over human summaries of cos_HS + w*cos_RW (``cosine_*`` and ``*``
  fields) and of the emb_info embedding's dot (``dot_*``); the fork's skip rule. For a task whose mteb evaluator is
  ``DeprecatedSummarizationEvaluator`` (SummEval), each field is the mean of (statistic, p-value) pairs, as the fork's
  SummEval reports it (mteb issue 1156).
- Classification: logistic regression (random_state 42, max_iter 100) fit on HS and on RW separately; the predicted
  label ids are averaged, (y_HS + y_RW*w) / (1+w), and truncated to int (the fork's except-branch ``int(i)``; when the
  averages are all integral, its float path gives the same numbers). ``n_experiments`` / ``samples_per_label`` from
  the task; undersampling as the fork: one index array, shuffled in place each experiment by numpy's legacy RNG freshly
  seeded 42. String labels are coded 0..k-1 in sorted order first.
- Clustering (one cluster set at a time, as mteb's legacy clustering): MiniBatchKMeans(k = number of labels,
  batch_size 500, n_init "auto") on HS, then on RW, both drawing from one RandomState(42) (the fork reseeds numpy's
  global RNG to 42 per set and leaves random_state unset); cluster ids averaged, (c_HS + c_RW*w) / (1+w), and those
  float values are the clusters v_measure sees. MiniBatchKMeans itself changed between scikit-learn 1.5 and 1.9
  (other labels for the same data and RandomState), so clustering scores match the public code only on the same
  scikit-learn version.
  mteb 2.x clustering tasks (``AbsTaskClustering``: the ``.v2`` and hierarchical sets, one document per row, a label
  or a list of labels one per level) have no counterpart in the fork (mteb 1.x scored them per set, as above): they
  keep mteb 2's own protocol (the documents it embeds: ``max_fraction_of_documents_to_embed`` / ``max_document_to_embed``
  drawn by ``random.Random(task.seed)``; per level ``n_clusters`` bootstrap draws of ``max_documents_per_cluster``;
  MiniBatchKMeans(k-means++, n_init 1, ``k_mean_batch_size``, random_state = task seed)), with the fork's combination:
  k-means on HS and on RW for each draw, cluster ids averaged. Main ``v_measure`` (mean over levels and draws), ``ami``.
- Retrieval (no counterpart in the fork, whose paper scored none): the summed similarity cos_HS + w*cos_RW, as the
  fork's Reranking, ranks each query's candidates (its ``top_ranked`` list, else the whole corpus; the best
  ``task._top_k`` kept); mteb 2's own retrieval metrics (pytrec_eval: ndcg/map/recall/precision/mrr at the task's
  k_values, nAUC) are computed on that ranking; main = the task's own (``ndcg_at_10``). Each subset's fields say so
  (``"scoring": "summed_similarity"``). A Reranking task without ``top_ranked`` ranks the whole corpus the same way.

Entry point (for the runner):

    evaluate_paper_sum(task, encode, alpha, *, split="test", emb_info="MoEE") -> (main_score, scores)

``encode(texts, *, task_metadata, prompt_type) -> (hs, rw)`` returns two float arrays (n, d_hs), (n, d_rw) for the
list it is given, already standardized as the caller's protocol wants (the fork: each feature z-scored over each chunk
of batch_size texts of THIS list). The lists are the fork's encode calls, in its order, so batch statistics match:
STS sentence1 then sentence2; PairClassification the unique sentences (first-appearance order; the fork's
``list(set(...))`` order depends on PYTHONHASHSEED, so it matches only within one batch); Classification the test
texts once (the fork re-encodes the same list every experiment: same result) and each experiment's undersampled
train texts; Clustering each set; Reranking the queries (prompt_type "query") then the unique candidates ("document");
Summarization all human then all machine summaries. prompt_type is None except for reranking.
``emb_info`` names the fork's ``--emb_info`` embedding for the secondary fields: "MoEE" (= [HS, RW] side by side,
which equals the fork's z-scored concatenation because z-scoring is per feature), "HS" or "RW".
``scores`` is a list of one dict per hf_subset (mteb's layout: fields + "hf_subset" + "main_score"); ``main_score``
is their mean.
``encoder_blocks(encoder)`` makes that ``encode`` from a ``moee_exp.scoring.encoder.MoEEEncoder`` (its own encode() run as
kind "hs" and as kind "rw" on one extraction, so its prompting and standardization settings apply to both blocks).
The array-level functions (``sts_scores`` ...) take ``Blocks`` directly, e.g. embeddings saved from the public code.
"""

from __future__ import annotations

import copy
import random
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.cluster import MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    adjusted_mutual_info_score,
    average_precision_score,
    f1_score,
    v_measure_score,
)
from sklearn.metrics.pairwise import (
    paired_cosine_distances,
    paired_euclidean_distances,
    paired_manhattan_distances,
)

from ..errors import ConfigError

SEED = 42  # the fork's Evaluator / AbsTask default seed
EMB_INFOS = ("MoEE", "HS", "RW")

EncodeFn = Callable[..., tuple[np.ndarray, np.ndarray]]


class Blocks(NamedTuple):
    """One encode call's outputs: the two blocks and the emb_info embedding (rows = texts)."""

    hs: np.ndarray
    rw: np.ndarray
    emb: np.ndarray

    def take(self, idx) -> Blocks:
        return Blocks(self.hs[idx], self.rw[idx], self.emb[idx])


def make_blocks(hs: np.ndarray, rw: np.ndarray, emb_info: str = "MoEE") -> Blocks:
    hs, rw = np.asarray(hs), np.asarray(rw)
    if emb_info not in EMB_INFOS:
        raise ValueError(f"emb_info={emb_info!r} is not one of {EMB_INFOS}")
    if hs.ndim != 2 or rw.ndim != 2 or len(hs) != len(rw):
        raise ValueError(f"encode must return two (n, d) arrays with the same n, got {hs.shape} and {rw.shape}")
    emb = {"MoEE": lambda: np.concatenate([hs, rw], axis=1), "HS": lambda: hs, "RW": lambda: rw}[emb_info]()
    return Blocks(hs, rw, emb)


def _cos(a: np.ndarray, b: np.ndarray) -> torch.Tensor:
    """Cosine matrix in torch, in the arrays' dtype (the fork's utils.cos_sim)."""
    a, b = torch.as_tensor(np.atleast_2d(a)), torch.as_tensor(np.atleast_2d(b))
    return torch.nn.functional.normalize(a, p=2, dim=1) @ torch.nn.functional.normalize(b, p=2, dim=1).T


# ---- STS ----------------------------------------------------------------------------------------------------------

def sts_scores(b1: Blocks, b2: Blocks, gold: Sequence[float], w: float) -> dict[str, float]:
    gold = list(gold)
    cos = 1 - paired_cosine_distances(b1.emb, b2.emb)
    cos_hs = 1 - paired_cosine_distances(b1.hs, b2.hs)
    cos_rw = 1 - paired_cosine_distances(b1.rw, b2.rw)
    manhattan = -paired_manhattan_distances(b1.emb, b2.emb)
    euclidean = -paired_euclidean_distances(b1.emb, b2.emb)
    summed = cos_hs.astype(np.float64) + cos_rw.astype(np.float64) * w
    out = {
        "pearson": pearsonr(gold, cos)[0],  # the fork's model has no similarity(): pearson is the cosine one
        "spearman": spearmanr(gold, cos_hs)[0] + spearmanr(gold, cos_rw)[0] * w,
        "cosine_pearson": pearsonr(gold, cos)[0],
        "cosine_spearman": spearmanr(gold, summed)[0],
        "manhattan_pearson": pearsonr(gold, manhattan)[0],
        "manhattan_spearman": spearmanr(gold, manhattan)[0],
        "euclidean_pearson": pearsonr(gold, euclidean)[0],
        "euclidean_spearman": spearmanr(gold, euclidean)[0],
    }
    return {k: float(v) for k, v in out.items()}


# ---- PairClassification -------------------------------------------------------------------------------------------

def _threshold_metrics(scores: np.ndarray, labels: np.ndarray, high_more_similar: bool) -> dict[str, float]:
    """Best accuracy / F1 over the cut points of the stably sorted scores, every cut counted (ties not skipped)."""
    scores, labels = np.asarray(scores), np.asarray(labels)
    n = len(labels)
    order = np.argsort(-scores if high_more_similar else scores, kind="stable")  # = sorted(..., reverse=...)
    s, pos = scores[order], (labels[order] == 1)
    cut_pos = np.cumsum(pos)[: n - 1]  # positives among the first i+1 rows, cut after row i
    cut_neg = np.arange(1, n) - cut_pos
    mids = (s[:-1] + s[1:]) / 2
    acc = (cut_pos + (np.sum(labels == 0) - cut_neg)) / n
    out = {"accuracy": 0.0, "accuracy_threshold": -1.0, "f1": 0.0, "f1_threshold": 0.0, "precision": 0.0, "recall": 0.0}
    if n > 1 and acc.max() > 0:  # first strict improvement over the fork's start values
        i = int(np.argmax(acc))
        out.update(accuracy=float(acc[i]), accuracy_threshold=float(mids[i]))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = cut_pos / np.arange(1, n)
        recall = cut_pos / labels.sum()
        f1 = np.where(cut_pos > 0, 2 * precision * recall / (precision + recall), 0.0)
    if n > 1 and f1.max() > 0:
        i = int(np.argmax(f1))
        out.update(f1=float(f1[i]), f1_threshold=float(mids[i]), precision=float(precision[i]), recall=float(recall[i]))
    out["ap"] = float(average_precision_score(labels, scores * (1 if high_more_similar else -1)))
    return out


def pair_classification_scores(b1: Blocks, b2: Blocks, labels: Sequence[int], w: float) -> dict[str, float]:
    cosine = (1 - paired_cosine_distances(b1.hs, b2.hs)) + w * (1 - paired_cosine_distances(b1.rw, b2.rw))
    manhattan = paired_manhattan_distances(b1.hs, b2.hs) + w * paired_manhattan_distances(b1.rw, b2.rw)
    euclidean = paired_euclidean_distances(b1.hs, b2.hs) + w * paired_euclidean_distances(b1.rw, b2.rw)
    dot = np.einsum("ij,ij->i", b1.emb, b2.emb)
    labels = np.asarray(labels)
    out: dict[str, float] = {}
    best = defaultdict(list)
    for name, scores, high in (("similarity", cosine, True), ("cosine", cosine, True), ("manhattan", manhattan, False),
                               ("euclidean", euclidean, False), ("dot", dot, True)):
        for metric, value in _threshold_metrics(scores, labels, high).items():
            out[f"{name}_{metric}"] = value
            best[metric].append(value)
    for metric in ("accuracy", "f1", "precision", "recall", "ap"):
        out[f"max_{metric}"] = max(best[metric])
    return out


# ---- Classification -----------------------------------------------------------------------------------------------

def undersample(labels: Sequence, samples_per_label: int, n_experiments: int, seed: int = SEED) -> list[list[int]]:
    """Each experiment's training rows, as the fork draws them: the same index array, shuffled in place each time."""
    idxs = np.arange(len(labels))
    draws = []
    for _ in range(n_experiments):
        np.random.RandomState(seed).shuffle(idxs)
        taken: dict[Any, int] = defaultdict(int)
        rows = []
        for i in idxs:
            if taken[labels[i]] < samples_per_label:
                rows.append(int(i))
                taken[labels[i]] += 1
        draws.append(rows)
    return draws


def averaged_labels(y_hs: np.ndarray, y_rw: np.ndarray, w: float) -> np.ndarray:
    """(y_HS + y_RW*w) / (1+w), truncated to int as the fork's ``int(i)`` does."""
    return np.trunc((np.asarray(y_hs) + np.asarray(y_rw) * w) / (1 + w)).astype(np.int64)


def classification_experiment(train: Blocks, y_train, test: Blocks, y_test, w: float, *, max_iter: int = 100,
                              seed: int = SEED) -> dict[str, float]:
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    clf = LogisticRegression(random_state=seed, max_iter=max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        y_hs = clf.fit(train.hs, y_train).predict(test.hs)
        y_rw = clf.fit(train.rw, y_train).predict(test.rw)
    y_pred = averaged_labels(y_hs, y_rw, w)
    out = {
        "accuracy": accuracy_score(y_test, y_pred),
        "f1": f1_score(y_test, y_pred, average="macro"),
        "f1_weighted": f1_score(y_test, y_pred, average="weighted"),
    }
    if len(np.unique(y_train)) == 2:
        out["ap"] = average_precision_score(y_test, y_pred, average="macro")
        out["ap_weighted"] = average_precision_score(y_test, y_pred, average="weighted")
    return {k: float(v) for k, v in out.items()}


def label_codes(*label_lists: Sequence) -> dict:
    """Label -> int id: integers stay as they are; anything else is coded 0..k-1 in sorted order."""
    values = sorted({v for labels in label_lists for v in labels})
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        return {v: int(v) for v in values}
    return {v: i for i, v in enumerate(values)}


# ---- Clustering ---------------------------------------------------------------------------------------------------

def cluster_ids(blocks: Blocks, n_clusters: int, w: float, *, batch_size: int = 500, seed: int = SEED) -> np.ndarray:
    rng = np.random.RandomState(seed)  # one stream for both fits, HS first: the fork's reseeded global RNG
    ids = [MiniBatchKMeans(n_clusters=n_clusters, batch_size=batch_size, n_init="auto", random_state=rng).fit(x).labels_
           for x in (blocks.hs, blocks.rw)]
    return (ids[0] + ids[1] * w) / (1 + w)


def clustering_v_measure(blocks: Blocks, labels: Sequence, w: float, **kw) -> float:
    with warnings.catch_warnings():  # sklearn warns that the averaged ids are not integers: that is the method
        warnings.simplefilter("ignore", UserWarning)
        return float(v_measure_score(list(labels), cluster_ids(blocks, len(set(labels)), w, **kw)))


def bootstrapped_clustering_scores(blocks: Blocks, labels: Sequence, w: float, *, n_draws: int, draw_size: int,
                                  batch_size: int, max_depth: int | None, rng: random.Random, seed: int) -> dict:
    """mteb 2's bootstrapped clustering (per level, ``n_draws`` draws of ``draw_size`` rows with replacement, a
    MiniBatchKMeans per draw) with the fork's combination: k-means on HS and on RW, cluster ids averaged."""
    levels = [list(y) if isinstance(y, (list, tuple)) else [y] for y in labels]
    depth = max(map(len, levels))
    depth = min(max_depth, depth) if max_depth is not None else depth
    v_measures: dict[str, list[float]] = {}
    amis: dict[str, list[float]] = {}
    for level in range(depth):
        rows = [i for i, y in enumerate(levels) if len(y) > level]
        gold = np.array([levels[i][level] for i in rows])
        hs, rw = blocks.hs[rows], blocks.rw[rows]
        k = int(np.unique(gold).size)
        v_measures[f"Level {level}"], amis[f"Level {level}"] = [], []
        for _ in range(n_draws):
            idx = rng.choices(range(len(rows)), k=draw_size)
            ids = [MiniBatchKMeans(n_clusters=k, batch_size=batch_size, init="k-means++", n_init=1,
                                   random_state=seed).fit_predict(x[idx]) for x in (hs, rw)]
            averaged = (ids[0] + ids[1] * w) / (1 + w)
            with warnings.catch_warnings():  # sklearn warns that the averaged ids are not integers: the method
                warnings.simplefilter("ignore", UserWarning)
                v_measures[f"Level {level}"].append(float(v_measure_score(gold[idx], averaged)))
                amis[f"Level {level}"].append(float(adjusted_mutual_info_score(gold[idx], averaged)))
    flat_v = [v for vs in v_measures.values() for v in vs]
    flat_a = [a for a_s in amis.values() for a in a_s]
    return {"v_measure": float(np.mean(flat_v)), "v_measure_std": float(np.std(flat_v)), "v_measures": v_measures,
            "ami": float(np.mean(flat_a)), "ami_std": float(np.std(flat_a)), "ami_scores": amis}


# ---- Reranking ----------------------------------------------------------------------------------------------------

def reranking_scores(queries: Blocks, docs: Blocks, samples: Sequence[tuple[int, list[int], int]], w: float,
                     mrr_at_k: int = 10) -> dict[str, float]:
    """samples: (query row, candidate doc rows, number of positives, which come first) per query."""
    from mteb._evaluators.retrieval_metrics import confidence_scores, nauc

    aps, mrrs, confs = [], [], []
    for q, cand, n_pos in samples:
        relevant = [True] * n_pos + [False] * (len(cand) - n_pos)
        sim = _cos(queries.emb[q], docs.emb[cand]).amax(dim=0)
        summed = _cos(queries.hs[q], docs.hs[cand])[0] + _cos(queries.rw[q], docs.rw[cand])[0] * w
        aps.append(average_precision_score(relevant, summed.numpy()))
        top = torch.argsort(-sim)[:mrr_at_k].tolist()
        mrrs.append(next((1 / (r + 1) for r, i in enumerate(top) if relevant[i]), 0))
        confs.append(confidence_scores(sim.tolist()))
    out = {"map": float(np.mean(aps)), "mrr": float(np.mean(mrrs))}
    for name, metric in (("map", aps), ("mrr", mrrs)):
        for fct in confs[0]:
            out[f"nAUC_{name}_{fct}"] = float(nauc(np.array([c[fct] for c in confs]), np.array(metric)))
    return out


def summed_similarity_ranking(queries: Blocks, docs: Blocks, query_ids: Sequence[str], doc_ids: Sequence[str],
                              w: float, *, top_k: int, candidates: dict | None = None,
                              chunk: int = 256) -> dict[str, dict[str, float]]:
    """{query id: {doc id: cos_HS + w*cos_RW}} for each query's best ``top_k`` candidates (``candidates[qid]``: its
    doc ids, else the whole corpus), the results dict mteb's retrieval metrics read."""
    results: dict[str, dict[str, float]] = {}
    if candidates is not None:
        row = {d: i for i, d in enumerate(doc_ids)}
        for q, qid in enumerate(query_ids):
            cand = [d for d in candidates.get(qid, []) if d in row]
            if not cand:
                results[qid] = {}
                continue
            rows = [row[d] for d in cand]
            summed = (_cos(queries.hs[q], docs.hs[rows]) + _cos(queries.rw[q], docs.rw[rows]) * w)[0]
            top = torch.topk(summed, min(top_k, len(rows)))
            results[qid] = {cand[i]: float(v) for v, i in zip(top.values.tolist(), top.indices.tolist())}
        return results
    for start in range(0, len(query_ids), chunk):  # query chunks: the full matrix of a large corpus would not fit
        sl = slice(start, start + chunk)
        summed = _cos(queries.hs[sl], docs.hs) + _cos(queries.rw[sl], docs.rw) * w
        top = torch.topk(summed, min(top_k, len(doc_ids)), dim=1)
        for qid, values, idx in zip(query_ids[sl], top.values.tolist(), top.indices.tolist()):
            results[qid] = {doc_ids[i]: float(v) for v, i in zip(values, idx)}
    return results


def retrieval_scores(results: dict[str, dict[str, float]], qrels: dict, k_values: Sequence[int], *,
                     ignore_identical_ids: bool = False, skip_first_result: bool = False,
                     task_scores: Callable[[dict], dict] | None = None) -> dict[str, Any]:
    """mteb 2's retrieval metrics of a ranking (pytrec_eval: ndcg, map, recall, precision, mrr, nAUC, hit rate);
    ``task_scores(per-query scores)``: a task's own extra fields (mteb's ``task_specific_scores``)."""
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores, make_score_dict

    if ignore_identical_ids:  # as mteb's RetrievalEvaluator: a document never retrieves itself
        results = {qid: {d: v for d, v in docs.items() if d != qid} for qid, docs in results.items()}
    r = calculate_retrieval_scores(results, qrels, list(k_values), skip_first_result)
    return make_score_dict(ndcg=r.ndcg, _map=r.map, recall=r.recall, precision=r.precision, mrr=r.mrr,
                           naucs=r.naucs, naucs_mrr=r.naucs_mrr, hit_rate=r.hit_rate,
                           task_scores=task_scores(r.all_scores) if task_scores else {})


# ---- Summarization ------------------------------------------------------------------------------------------------

def summarization_scores(human: Sequence[Blocks], machine: Sequence[Blocks], gold: Sequence[Sequence[float]],
                         w: float, *, deprecated: bool = False) -> dict[str, float]:
    """human[i] / machine[i]: the summaries of text i; gold[i]: the machine summaries' normalized relevance."""
    fields = {k: [] for k in ("pearson", "spearman", "cosine_spearman", "cosine_pearson", "dot_spearman",
                              "dot_pearson")}
    for h, m, g in zip(human, machine, gold, strict=True):
        cos = (_cos(m.hs, h.hs) + _cos(m.rw, h.rw) * w).amax(dim=1).tolist()
        dot = (torch.as_tensor(m.emb) @ torch.as_tensor(h.emb).T).amax(dim=1).tolist()
        human_scores = list(g)
        if len(human_scores) < 2 or len(set(human_scores)) == 1 or len(set(dot)) == 1 or len(set(cos)) == 1:
            continue
        for name, pred in (("cosine", cos), ("dot", dot), ("", cos)):  # the model has no similarity(): cosine
            for corr, fn in (("spearman", spearmanr), ("pearson", pearsonr)):
                r = fn(human_scores, pred)
                fields[f"{name}_{corr}" if name else corr].append(tuple(r) if deprecated else r[0])
    return {k: float(np.mean(v)) for k, v in fields.items()}  # a (statistic, p) pair averages in its p-value


def encoder_blocks(encoder) -> EncodeFn:
    """``encode`` for evaluate_paper_sum from a MoEEEncoder: its encode() as kind "hs" and as kind "rw"."""
    last: dict[str, Any] = {}

    def featurize(texts, *args, **kwargs):  # the second kind reuses the first one's extraction of the same call
        key = repr((list(texts), args, sorted(kwargs.items())))
        if last.get("key") != key:
            last.update(key=key, features=encoder.model(texts, *args, **kwargs))
        return last["features"]

    views = {}
    for kind in ("hs", "rw"):
        views[kind] = copy.copy(encoder)
        views[kind].kind, views[kind].model = kind, featurize

    def encode(texts, *, task_metadata, prompt_type=None):
        batch = [{"text": list(texts)}]  # what encode() iterates: batches holding a "text" list
        return tuple(views[k].encode(batch, task_metadata=task_metadata, hf_split="test", hf_subset="default",
                                     prompt_type=prompt_type) for k in ("hs", "rw"))

    return encode


# ---- mteb 2.x tasks -> the fork's encode calls --------------------------------------------------------------------

def _split(task, subset: str, split: str):
    ds = task.dataset
    return ds[split] if subset not in ds and subset == "default" else ds[subset][split]


class _Encoder:
    def __init__(self, encode: EncodeFn, task, emb_info: str):
        self.encode, self.task, self.emb_info = encode, task, emb_info

    def __call__(self, texts: Sequence[str], prompt_type=None) -> Blocks:
        hs, rw = self.encode(list(texts), task_metadata=self.task.metadata, prompt_type=prompt_type)
        return make_blocks(hs, rw, self.emb_info)


def _sts(task, subset: str, split: str, enc: _Encoder, w: float) -> dict:
    data = _split(task, subset, split)
    c1, c2 = task.column_names
    gold = [(s - task.min_score) / (task.max_score - task.min_score) for s in data["score"]]
    return sts_scores(enc(data[c1]), enc(data[c2]), gold, w)


def _pair_classification(task, subset: str, split: str, enc: _Encoder, w: float) -> dict:
    data = _split(task, subset, split)
    if len(data) == 1 and isinstance(data[0][task.input1_column_name], list):  # mteb 1.x: one row holding lists
        data = data[0]
    s1, s2 = list(data[task.input1_column_name]), list(data[task.input2_column_name])
    unique = list(dict.fromkeys(s1 + s2))
    row = {t: i for i, t in enumerate(unique)}
    blocks = enc(unique)
    return pair_classification_scores(blocks.take([row[t] for t in s1]), blocks.take([row[t] for t in s2]),
                                      data[task.label_column_name], w)


def _classification(task, subset: str, split: str, enc: _Encoder, w: float) -> dict:
    train, test = _split(task, subset, task.train_split), _split(task, subset, split)
    x_col, y_col = task.input_column_name, task.label_column_name
    codes = label_codes(train[y_col], test[y_col])
    y_train = [codes[v] for v in train[y_col]]
    y_test = [codes[v] for v in test[y_col]]
    texts = train[x_col]
    test_blocks = enc(test[x_col])
    runs = []
    for rows in undersample(y_train, task.samples_per_label, task.n_experiments):
        runs.append(classification_experiment(enc([texts[i] for i in rows]), [y_train[i] for i in rows],
                                              test_blocks, y_test, w))
    out: dict[str, Any] = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    out["scores_per_experiment"] = runs
    return out


def _clustering(task, subset: str, split: str, enc: _Encoder, w: float) -> dict:
    data = _split(task, subset, split)
    x_col, y_col = getattr(task, "input_column_name", "sentences"), getattr(task, "label_column_name", "labels")
    if len(data) and isinstance(data[0][x_col], (list, tuple)):  # mteb 1.x layout: a row is a set of texts
        v = [clustering_v_measure(enc(row[x_col]), row[y_col], w) for row in data]
        return {"v_measure": float(np.mean(v)), "v_measure_std": float(np.std(v)), "v_measures": v}
    return _clustering_documents(task, data, x_col, y_col, enc, w)


def _clustering_documents(task, data, x_col: str, y_col: str, enc: _Encoder, w: float) -> dict:
    """mteb 2's AbsTaskClustering layout (a row is one document): its sampling, the fork's id averaging."""
    rng = random.Random(task.seed)  # the task's rng_state as mteb creates it
    n_docs, fraction = len(data), getattr(task, "max_fraction_of_documents_to_embed", None)
    limit = getattr(task, "max_document_to_embed", None)
    if fraction is not None:
        limit = int(fraction * n_docs)
    rows = list(range(n_docs)) if limit is None else rng.sample(range(n_docs), k=min(n_docs, limit))
    if len(rows) < 2:
        raise ValueError(f"{task.metadata.name}: {len(rows)} of its {n_docs} documents would be embedded "
                         "(max_fraction_of_documents_to_embed / max_document_to_embed): too few to cluster")
    subset = data.select(rows)
    return bootstrapped_clustering_scores(
        enc(subset[x_col]), subset[y_col], w, n_draws=task.n_clusters, draw_size=task.max_documents_per_cluster,
        batch_size=task.k_mean_batch_size, max_depth=task.max_depth, rng=rng, seed=task.seed,
    )


def _reranking(task, subset: str, split: str, enc: _Encoder, w: float) -> dict:
    data = _split(task, subset, split)
    from mteb.types import PromptType

    doc_text = dict(zip(data["corpus"]["id"], data["corpus"]["text"]))
    qrels, top = data["relevant_docs"], data["top_ranked"]
    query_texts, groups = [], []
    for qid, text in zip(data["queries"]["id"], data["queries"]["text"]):
        rel = qrels.get(qid, {})
        ranked = list(top[qid]) if top is not None else list(data["corpus"]["id"])  # no top_ranked: whole corpus
        pos = [d for d in ranked if rel.get(d, 0) > 0] + [d for d, s in rel.items() if s > 0 and d not in ranked]
        neg = [d for d in ranked if rel.get(d, 0) <= 0]
        if pos and neg:  # the fork drops a query without positives or without negatives before encoding
            query_texts.append(text)
            groups.append([doc_text[d] for d in pos + neg] + [len(pos)])
    docs = list(dict.fromkeys(t for g in groups for t in g[:-1]))
    row = {t: i for i, t in enumerate(docs)}
    samples = [(q, [row[t] for t in g[:-1]], g[-1]) for q, g in enumerate(groups)]
    return reranking_scores(enc(query_texts, PromptType.query), enc(docs, PromptType.document), samples, w)


def _retrieval_texts(dataset, prompt_type) -> list[str]:
    """A corpus entry's or query's text as mteb's retrieval dataloaders give it to a model (title + text, ...)."""
    try:
        from mteb._create_dataloaders import _retrieval_texts
    except ImportError:  # an mteb without the helper: title and text joined, as its corpus loader does
        titles = dataset["title"] if "title" in dataset.column_names else [""] * len(dataset)
        return [f"{t} {x}".strip() if t else x.strip() for t, x in zip(titles, dataset["text"])]
    return _retrieval_texts(dataset, prompt_type)


def _retrieval(task, subset: str, split: str, enc: _Encoder, w: float) -> dict:
    data = _split(task, subset, split)
    from mteb.types import PromptType

    qrels = {q: r for q, r in data["relevant_docs"].items() if len(r)}  # as mteb: queries without qrels dropped
    queries = data["queries"].select([i for i, q in enumerate(data["queries"]["id"]) if q in qrels])
    query_ids, doc_ids = list(queries["id"]), list(data["corpus"]["id"])
    q_blocks = enc(_retrieval_texts(queries, PromptType.query), PromptType.query)
    d_blocks = enc(_retrieval_texts(data["corpus"], PromptType.document), PromptType.document)
    results = summed_similarity_ranking(q_blocks, d_blocks, query_ids, doc_ids, w, top_k=getattr(task, "_top_k", 1000),
                                        candidates=data.get("top_ranked"))
    out = retrieval_scores(results, qrels, task.k_values, ignore_identical_ids=task.ignore_identical_ids,
                           skip_first_result=task.skip_first_result,
                           task_scores=lambda per_query: task.task_specific_scores(per_query, qrels, results,
                                                                                    hf_split=split, hf_subset=subset))
    out["scoring"] = "summed_similarity"  # cos_HS + w*cos_RW ranks; mteb's metrics (the fork scored no Retrieval)
    return out


def _summarization(task, subset: str, split: str, enc: _Encoder, w: float) -> dict:
    data = _split(task, subset, split)
    from mteb._evaluators.text.summarization_evaluator import (
        DeprecatedSummarizationEvaluator,
    )

    hum, mac = data[task.human_summaries_column_name], data[task.machine_summaries_column_name]
    gold = [(np.array(r) - task.min_score) / (task.max_score - task.min_score) for r in data[task.relevancy_column_name]]
    h_all, m_all = enc([s for g in hum for s in g]), enc([s for g in mac for s in g])
    split_at = lambda b, groups: [b.take(slice(a, z)) for a, z in zip(np.cumsum([0] + [len(g) for g in groups])[:-1],
                                                                          np.cumsum([len(g) for g in groups]))]
    deprecated = issubclass(getattr(task, "evaluator", object), DeprecatedSummarizationEvaluator)
    return summarization_scores(split_at(h_all, hum), split_at(m_all, mac), [list(g) for g in gold], w,
                                deprecated=deprecated)


@dataclass(frozen=True)
class Scorer:
    """The public code's MoEE(sum) scoring of one mteb task type: ``score(task, subset, split, encode, alpha)`` -> its
    metrics, of which ``main_score`` is the one reported (None: the task's own mteb main score)."""

    task_type: str
    score: Callable
    main_score: str | None


SCORERS: dict[str, Scorer] = {}


def register_scorer(scorer: Scorer) -> Scorer:
    SCORERS[scorer.task_type] = scorer
    return scorer


for _scorer in (Scorer("STS", _sts, "cosine_spearman"), Scorer("PairClassification", _pair_classification, "max_ap"),
                Scorer("Classification", _classification, "accuracy"), Scorer("Clustering", _clustering, "v_measure"),
                Scorer("Reranking", _reranking, "map"), Scorer("Summarization", _summarization, "cosine_spearman"),
                # Retrieval: mteb's own main score (ndcg_at_10 for every Retrieval task of MTEB(eng, v2))
                Scorer("Retrieval", _retrieval, None)):
    register_scorer(_scorer)

MAIN_SCORES = {t: s.main_score for t, s in SCORERS.items() if s.main_score}  # the fork's main score per task type


def main_score_name(task) -> str:
    """The main score this module reports for ``task``: the fork's per type, else the task's own mteb one."""
    scorer = SCORERS.get(task.metadata.type)
    return scorer.main_score if scorer is not None and scorer.main_score else task.metadata.main_score


def check_scorable(tasks) -> None:
    """ConfigError, before any model loads, when a task's type has no scoring here (an α-weighted kind under
    protocol.sum_scoring=paper is scored by these, not by mteb's evaluators)."""
    missing = sorted({f"{t.metadata.type} ({t.metadata.name})" for t in tasks if t.metadata.type not in SCORERS})
    if missing:
        raise ConfigError(
            f"protocol.sum_scoring=paper has no scoring for {', '.join(missing)} (it covers {', '.join(SCORERS)}): "
            "use protocol.sum_scoring=similarity (mteb's evaluators on the summed similarity) or leave those tasks out")


def evaluate_paper_sum(task, encode: EncodeFn, alpha: float, *, split: str = "test",
                       emb_info: str = "MoEE") -> tuple[float, list[dict]]:
    """The fork's MoEE(sum) main score of ``task`` (mean over its hf_subsets) and its fields per subset."""
    kind = task.metadata.type
    if kind not in SCORERS:
        raise ValueError(f"the public code's MoEE(sum) scoring covers {sorted(SCORERS)}, not {kind} ({task.metadata.name})")
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    if emb_info not in EMB_INFOS:
        raise ValueError(f"emb_info={emb_info!r} is not one of {EMB_INFOS}")
    if not getattr(task, "data_loaded", False):
        task.load_data()
    score_fn, main = SCORERS[kind].score, main_score_name(task)
    enc = _Encoder(encode, task, emb_info)
    subsets = list(getattr(task, "hf_subsets", None) or ["default"])
    scores = []
    for subset in subsets:
        fields = score_fn(task, subset, split, enc, alpha)
        scores.append({**fields, "main_score": fields[main], "hf_subset": subset})
    return float(np.mean([s["main_score"] for s in scores])), scores

