"""Synthetic data for REAL mteb tasks: rehearse a task's own class (metadata, splits, subsets, evaluator, main
score) offline, with only its data loading replaced.

Public API
----------
``synthesize(task, size="small", seed=0) -> task``
    Replace the data loading of an mteb task object (``mteb.get_task(name)``: the real class, kept as is) by
    deterministic synthetic data in exactly the layout that task's AbsTask class reads in mteb 2.x, then return
    the same object. Nothing is downloaded; ``mteb.evaluate`` runs the task's own evaluator on it. The task's
    ``dataset_transform`` (the hub layout → mteb layout step) is not run: the data are generated in mteb's layout.
``synthetic_task(name, size="small", seed=0) -> task``
    ``synthesize(mteb.get_task(name), size, seed)``.
``plan(task, size="small") -> dict``
    What ``synthesize`` will generate, without generating it: ``{subset: {split: shape}}``, where a shape holds
    the counts (``n`` rows / pairs / queries / texts, ``n_labels``, ``per_query`` candidates, ...), the average
    text lengths in characters (``chars``) and ``texts``: how many texts the evaluator encodes from that split
    (for a Classification train split: at most n_experiments x samples_per_label x labels, its undersample).
``SIZES``
    ``"small"``: a few rows per split (fast tests). ``"real"``: the counts and average text lengths of the real
    data, read from mteb's own descriptive statistics (``task.metadata.descriptive_stats``), so the real
    evaluators can be timed at real size on synthetic embeddings.

What is read from the task, not written per task: its type and AbsTask class (→ layout), ``hf_subsets`` and
``is_multilingual`` (→ subset keys), ``eval_splits`` (+ ``train_split`` for Classification), the class's column
names (``input_column_name``, ``column_names``, ...), ``min_score``/``max_score`` (STS, Summarization),
``samples_per_label`` (Classification), and from the descriptive statistics: samples per split (per subset where
mteb has them), average text lengths, number of labels and their frequencies, queries / candidates / positives
per query. Two things mteb's metadata does not hold: how many sets a legacy clustering task's texts come in
(``LEGACY_CLUSTERING_SETS``, the mteb 1.x layout of 10 sets), and whether a clustering task's labels are
hierarchical (a list of labels per document, made by its ``dataset_transform``; by name, ``_hierarchical``).
A document-per-row clustering task (mteb 2's AbsTaskClustering) embeds only ``max_fraction_of_documents_to_embed``
(4%) of its documents: "small" generates enough documents for that sample to hold ``_SMALL["clustered"]`` of them,
and draws that many per bootstrap draw (``max_documents_per_cluster``; mteb's 16384 would repeat the same few).
A Reranking task always gets candidates per query (``top_ranked``), as every mteb reranking set has.

The content is varied so that no evaluator degenerates: several labels (texts of a label share topic words),
STS scores spread over [min_score, max_score] with sentence2 a copy of sentence1 in which a share of words
shrinking with the score is replaced, PairClassification with both labels, reranking candidates with relevance 1
and 0 (in ``relevant_docs``, as mteb's reranking qrels are) in shuffled order with ids that say nothing of the
relevance, clustering sets with several labels, summaries whose relevance differs within each text.
A synthetic task carries ``task.synthetic = {"size", "seed", "version"}``, which ``moee_exp.jobs.resume`` adds to
the row identity, so a synthetic row is never reused for a real one.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import numpy as np

SIZES = ("small", "real")
VERSION = 2  # bump when the generated data change
LEGACY_CLUSTERING_SETS = 10  # mteb 1.x clustering datasets: 10 sets of texts per split (not in the metadata)

# "small": per split; kept tiny so that all 19 paper tasks run in seconds on a tiny model.
_SMALL = {
    "pairs": 16,  # STS / PairClassification pairs
    "per_label": 4,  # Classification test rows per label (train: the task's samples_per_label, at most 8)
    "labels": 4,  # at most this many labels / clusters / topics
    "sets": 2,  # clustering sets
    "set_size": 12,  # texts per clustering set
    "clustered": 24,  # documents a document-per-row clustering task embeds (its sample of the generated ones)
    "queries": 4,
    "candidates": 6,  # reranking candidates per query
    "positives": 2,
    "texts": 3,  # summarization texts
    "human": 2,
    "machine": 4,
    "chars": 60,  # at most this many characters per text on average
}
_DEFAULT_CHARS = 80  # when the statistics hold no text length
_DEFAULT_N = 200  # when the statistics hold no sample count ("real" size)


# ---------------------------------------------------------------------------------------------- statistics


def _stats(task) -> dict:
    try:
        return task.metadata.descriptive_stats or {}
    except Exception:  # noqa: BLE001 - a task without a statistics file: fall back to defaults
        return {}


def _split_stats(task, split: str, subset: str) -> dict:
    s = _stats(task).get(split) or {}
    per_subset = s.get("hf_subset_descriptive_stats") or {}
    return per_subset.get(subset) or s


def _avg(s: dict, key: str) -> float:
    v = s.get(key) or {}
    return float(v.get("average_text_length") or _DEFAULT_CHARS)


def _count(s: dict, key: str, default: int) -> int:
    """A count from the statistics; when a split's stats are the total over several subsets, they were split."""
    v = s.get(key)
    return int(v) if v else default


def _label_weights(s: dict, key: str) -> list[float]:
    labels = (s.get(key) or {}).get("labels") or {}
    counts = [float(v.get("count", 1)) for _, v in sorted(labels.items(), key=lambda kv: str(kv[0]))]
    return counts or [1.0, 1.0]


# ---------------------------------------------------------------------------------------------- plan


def _chars(size: str, avg: float) -> float:
    return min(avg, _SMALL["chars"]) if size == "small" else avg


def _plan_split(task, split: str, subset: str, size: str) -> dict:
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy

    kind = task.metadata.type
    s = _split_stats(task, split, subset)
    n_total = _count(s, "num_samples", _DEFAULT_N)
    small = size == "small"
    if kind in ("STS", "PairClassification"):
        n = _SMALL["pairs"] if small else n_total
        key = "label_statistics" if kind == "STS" else "labels_statistics"
        shape = {"n": n, "chars": [_chars(size, _avg(s, f"text{i}_statistics")) for i in (1, 2)]}
        if kind == "PairClassification":
            shape["label_weights"] = [1.0, 1.0] if small else _label_weights(s, key)
        shape["texts"] = 2 * n
        return shape
    if kind == "Classification":
        weights = _label_weights(s, "label_statistics")
        if small:
            n_labels = min(len(weights), _SMALL["labels"])
            per_label = _SMALL["per_label"] if split != task.train_split else min(task.samples_per_label, 8)
            weights, n = [1.0] * n_labels, n_labels * per_label
        else:
            n = n_total
        texts = n
        if split == task.train_split and split not in task.eval_splits:  # the evaluator encodes an undersample
            texts = min(n, task.n_experiments * task.samples_per_label * len(weights))  # (at most)
        shape = {"n": n, "n_labels": len(weights), "label_weights": weights, "texts": texts}
        return {**shape, "chars": _chars(size, _avg(s, "text_statistics"))}
    if kind == "Clustering":
        n_labels = int((s.get("label_statistics") or {}).get("unique_labels") or 5)
        chars = _chars(size, _avg(s, "text_statistics"))
        if isinstance(task, AbsTaskClusteringLegacy):
            if small:
                sets, per_set, n_labels = _SMALL["sets"], _SMALL["set_size"], min(n_labels, _SMALL["labels"])
            else:
                sets = LEGACY_CLUSTERING_SETS
                per_set = max(n_labels, math.ceil(n_total / sets))
            return {"sets": sets, "n": per_set, "n_labels": n_labels, "chars": chars, "texts": sets * per_set}
        fraction, limit = task.max_fraction_of_documents_to_embed, task.max_document_to_embed
        n = n_total
        if small:  # enough documents that the task's own sample of them holds _SMALL["clustered"]
            n = _SMALL["clustered"] if fraction is None else math.ceil(_SMALL["clustered"] / fraction)
            if fraction is None and limit is not None:
                n = max(n, min(limit, _SMALL["clustered"]))
        n_labels = min(n_labels, _SMALL["labels"]) if small else n_labels
        texts = int(fraction * n) if fraction is not None else min(n, limit) if limit is not None else n
        return {"n": n, "n_labels": n_labels, "chars": chars, "texts": texts, "levels": 2 if _hierarchical(task) else 1}
    if kind in ("Reranking", "Retrieval", "InstructionReranking", "InstructionRetrieval"):
        top = s.get("top_ranked_statistics") or {}
        rel = s.get("relevant_docs_statistics") or {}
        per_query = float(top.get("average_top_ranked_per_query") or 0)
        if kind.endswith("Reranking") and not per_query:  # no statistics (a bundled task): candidates all the same
            per_query = _SMALL["candidates"]
        n_queries = s.get("num_queries") or (round(top["num_top_ranked"] / per_query) if top.get("num_top_ranked") else 0)
        if not n_queries:
            n_queries = max(1, n_total // 10)
        n_docs = s.get("num_documents") or max(1, n_total - n_queries)
        positives = max(1.0, float(rel.get("average_relevant_docs_per_query") or 1))
        chars = [_chars(size, _avg(s, "queries_text_statistics")), _chars(size, _avg(s, "documents_text_statistics"))]
        if small:
            n_queries, positives = _SMALL["queries"], _SMALL["positives"]
            per_query = _SMALL["candidates"] if top or kind.endswith("Reranking") else 0
            n_docs = n_queries * (per_query or _SMALL["candidates"])
        shape = {"n": int(n_queries), "n_docs": int(n_docs), "positives": positives, "chars": chars}
        shape["per_query"] = per_query  # 0: plain retrieval (no top_ranked), the whole corpus is searched
        shape["texts"] = int(n_queries + n_docs)
        return shape
    if kind == "Summarization":
        n = _SMALL["texts"] if small else n_total

        def per_text(key, default):
            st = s.get(key) or {}
            if small or not st.get("average_text_length"):
                return default
            return max(2, round(st["total_text_length"] / st["average_text_length"] / max(n, 1)))

        human = per_text("human_summaries_statistics", _SMALL["human"])
        machine = per_text("machine_summaries_statistics", _SMALL["machine"])
        keys = ("text_statistics", "human_summaries_statistics", "machine_summaries_statistics")
        chars = [_chars(size, _avg(s, k)) for k in keys]
        return {"n": n, "human": human, "machine": machine, "chars": chars, "texts": n * (human + machine)}
    raise NotImplementedError(f"{task.metadata.name}: no synthetic layout for task type {kind!r}")


def _hierarchical(task) -> bool:
    """Whether a clustering task's documents carry a list of labels, one per level (ArXivHierarchicalClustering*:
    its dataset_transform splits "cs.AI" into ["cs", "AI"]); mteb's metadata does not say, its name does."""
    return "Hierarchical" in task.metadata.name


def _splits(task) -> list[str]:
    splits = list(task.eval_splits)
    if task.metadata.type == "Classification" and task.train_split not in splits:
        splits.append(task.train_split)
    return splits


def plan(task, size: str = "small") -> dict:
    if size not in SIZES:
        raise ValueError(f"size={size!r} is not one of {SIZES}")
    return {sub: {sp: _plan_split(task, sp, sub, size) for sp in _splits(task)} for sub in task.hf_subsets}


# ---------------------------------------------------------------------------------------------- text


class _Writer:
    """Deterministic pseudo-English: a common vocabulary plus a few topic words per label/topic."""

    SYL = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "be", "do", "fa", "gu", "ha", "ji", "pe", "zo", "an", "el"]

    def __init__(self, rng: np.random.Generator, n_topics: int = 1):
        self.rng = rng
        self.common = self._words(600)
        self.topics = [self._words(25) for _ in range(max(1, n_topics))]

    def _words(self, n: int) -> np.ndarray:
        k = self.rng.integers(1, 4, size=n)
        return np.array(["".join(self.rng.choice(self.SYL, size=int(i))) for i in k], dtype=object)

    def words(self, chars: float, topic: int | None = None) -> list[str]:
        n = max(1, round(chars * self.rng.uniform(0.5, 1.5) / 6.0))  # ~6 characters a word, space included
        out = self.common[self.rng.integers(0, len(self.common), size=n)]
        if topic is not None:
            mask = self.rng.random(n) < 0.5
            vocab = self.topics[topic % len(self.topics)]
            out[mask] = vocab[self.rng.integers(0, len(vocab), size=int(mask.sum()))]
        return list(out)

    def text(self, chars: float, topic: int | None = None) -> str:
        return " ".join(self.words(chars, topic)).capitalize() + "."

    def variant(self, text: str, keep: float) -> str:
        """The text with each word replaced by a common word with probability 1 - keep."""
        words = text.rstrip(".").split(" ")
        swap = self.rng.random(len(words)) >= keep
        for i in np.flatnonzero(swap):
            words[i] = self.common[self.rng.integers(0, len(self.common))]
        return " ".join(words).capitalize() + "."


def _labels(rng, n: int, weights: list[float]) -> np.ndarray:
    """n labels in 0..k-1: every label at least once (when n allows), the rest in the given proportions."""
    k = len(weights)
    p = np.asarray(weights, float) / sum(weights)
    base = np.arange(min(n, k))
    rest = rng.choice(k, size=n - len(base), p=p) if n > len(base) else np.array([], int)
    out = np.concatenate([base, rest]).astype(int)
    rng.shuffle(out)
    return out


# ---------------------------------------------------------------------------------------------- layouts


def _sts(task, rng, shape) :
    from datasets import Dataset

    w = _Writer(rng)
    lo, hi = float(task.min_score), float(task.max_score)
    scores = np.round(rng.uniform(lo, hi, shape["n"]), 2)
    scores[:2] = lo, hi  # the score range is covered
    s1 = [w.text(shape["chars"][0]) for _ in range(shape["n"])]
    s2 = [w.variant(t, keep=(sc - lo) / (hi - lo)) for t, sc in zip(s1, scores)]
    c1, c2 = task.column_names
    return Dataset.from_dict({c1: s1, c2: s2, "score": [float(x) for x in scores]})


def _pair_classification(task, rng, shape) :
    from datasets import Dataset

    w = _Writer(rng)
    labels = _labels(rng, shape["n"], shape["label_weights"])
    s1 = [w.text(shape["chars"][0]) for _ in labels]
    s2 = [w.variant(t, 0.7) if y == 1 else w.text(shape["chars"][1]) for t, y in zip(s1, labels)]
    return Dataset.from_dict(
        {task.input1_column_name: s1, task.input2_column_name: s2, task.label_column_name: [int(y) for y in labels]}
    )


def _classification(task, rng, shape) :
    from datasets import Dataset

    w = _Writer(rng, shape["n_labels"])
    labels = _labels(rng, shape["n"], shape["label_weights"])
    return Dataset.from_dict(
        {
            task.input_column_name: [w.text(shape["chars"], int(y)) for y in labels],
            task.label_column_name: [int(y) for y in labels],
        }
    )


def _clustering(task, rng, shape):
    from datasets import Dataset
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy

    w = _Writer(rng, shape["n_labels"])
    weights = [1.0] * shape["n_labels"]
    if isinstance(task, AbsTaskClusteringLegacy):  # one row per set: a list of texts and a list of labels
        sets = [_labels(rng, shape["n"], weights) for _ in range(shape["sets"])]
        return Dataset.from_dict(
            {
                task.input_column_name: [[w.text(shape["chars"], int(y)) for y in ys] for ys in sets],
                task.label_column_name: [[int(y) for y in ys] for ys in sets],
            }
        )
    labels = _labels(rng, shape["n"], weights)  # AbsTaskClustering: one row per text
    texts = [w.text(shape["chars"], int(y)) for y in labels]
    if shape.get("levels", 1) > 1:  # hierarchical: [top label, sub label] per document, as strings (the real layout)
        sub = rng.integers(0, 2, len(labels))
        return Dataset.from_dict({task.input_column_name: texts,
                                  task.label_column_name: [[f"t{y}", f"t{y}.s{z}"] for y, z in zip(labels, sub)]})
    return Dataset.from_dict({task.input_column_name: texts, task.label_column_name: [int(y) for y in labels]})


def _summarization(task, rng, shape) :
    from datasets import Dataset

    w = _Writer(rng, shape["n"])
    lo, hi = float(task.min_score), float(task.max_score)
    columns = (task.text_column_name, task.human_summaries_column_name, task.machine_summaries_column_name)
    rows = {c: [] for c in (*columns, task.relevancy_column_name)}
    c_text, c_human, c_machine = shape["chars"]
    for i in range(shape["n"]):
        text = w.text(c_text, i)
        human = [w.variant(w.text(c_human, i), 0.8) for _ in range(shape["human"])]
        keep = np.linspace(0.0, 1.0, shape["machine"])  # relevance differs within a text (mteb skips a tie)
        rng.shuffle(keep)
        machine = [w.variant(w.text(c_machine, i), float(k)) for k in keep]
        rows[task.text_column_name].append(text)
        rows[task.human_summaries_column_name].append(human)
        rows[task.machine_summaries_column_name].append(machine)
        rows[task.relevancy_column_name].append([round(lo + (hi - lo) * float(k), 2) for k in keep])
    return Dataset.from_dict(rows)


def _retrieval(task, rng, shape) -> dict:
    from datasets import Dataset
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData

    n_q, n_docs, per_query = shape["n"], shape["n_docs"], shape["per_query"]
    w = _Writer(rng, n_q)
    c_query, c_doc = shape["chars"]
    doc_ids = [f"d{i}" for i in rng.permutation(n_docs)]  # ids carry no relevance (mteb breaks ties by id)
    docs = [""] * n_docs
    owner = np.arange(n_docs) % n_q if per_query else rng.integers(0, n_q, n_docs)  # the query a doc is a candidate of
    queries, relevant, top = [], {}, {}
    for q in range(n_q):
        qid = f"q{q}"
        queries.append({"id": qid, "text": w.text(c_query, q)})
        mine = np.flatnonzero(owner == q)
        k = min(len(mine), max(1, int(rng.poisson(shape["positives"] - 1) + 1)))
        if per_query and k >= len(mine) and len(mine) > 1:
            k = len(mine) - 1  # keep a negative: relevance both 1 and 0
        pos = set(rng.choice(mine, size=k, replace=False).tolist()) if len(mine) else set()
        for d in mine:
            docs[d] = w.text(c_doc, q if d in pos else int(rng.integers(0, n_q)))
        relevant[qid] = {doc_ids[d]: int(d in pos) for d in mine} if per_query else {doc_ids[d]: 1 for d in pos}
        if per_query:
            top[qid] = [doc_ids[d] for d in rng.permutation(mine)]
    for d in np.flatnonzero(np.array([t == "" for t in docs])):
        docs[d] = w.text(c_doc)
    relevant = {q: r for q, r in relevant.items() if any(r.values())}  # as mteb's loader: queries with a positive
    queries = [q for q in queries if q["id"] in relevant]
    return RetrievalSplitData(
        corpus=Dataset.from_dict({"id": doc_ids, "text": docs}),
        queries=Dataset.from_list(queries),
        relevant_docs=relevant,
        top_ranked=top or None,
    )


_LAYOUTS = {
    "STS": _sts,
    "PairClassification": _pair_classification,
    "Classification": _classification,
    "Clustering": _clustering,
    "Summarization": _summarization,
    "Reranking": _retrieval,
    "Retrieval": _retrieval,
}


# ---------------------------------------------------------------------------------------------- public


def _rng(task, seed: int, subset: str, split: str) -> np.random.Generator:
    key = f"{task.metadata.name}/{subset}/{split}".encode()
    return np.random.default_rng([seed, zlib.crc32(key)])  # stable across processes (unlike hash())


def generate(task, size: str = "small", seed: int = 0) -> Any:
    """The synthetic value of ``task.dataset``: mteb's layout for the task's class, subsets and splits."""
    from datasets import DatasetDict

    layout = _LAYOUTS.get(task.metadata.type)
    if layout is None:
        raise NotImplementedError(f"{task.metadata.name}: no synthetic layout for task type {task.metadata.type!r}")
    shapes = plan(task, size)
    data = {
        sub: {sp: layout(task, _rng(task, seed, sub, sp), shape) for sp, shape in splits.items()}
        for sub, splits in shapes.items()
    }
    if task.metadata.type in ("Reranking", "Retrieval"):
        return data  # AbsTaskRetrieval: {subset: {split: RetrievalSplitData}}, monolingual tasks included
    data = {sub: DatasetDict(splits) for sub, splits in data.items()}
    # Monolingual tasks hold one DatasetDict (mteb's evaluate reads self.dataset[split] for "default").
    return data if task.metadata.is_multilingual else data["default"]


def synthesize(task, size: str = "small", seed: int = 0):
    """Give ``task`` synthetic data instead of its hub data (in place); returns the task."""
    if size not in SIZES:
        raise ValueError(f"size={size!r} is not one of {SIZES}")
    generate_args = (size, int(seed))

    def load_data(num_proc: int | None = None, **kwargs: Any) -> None:  # re-callable: mteb unloads after evaluate
        if task.data_loaded:
            return
        task.dataset = generate(task, *generate_args)
        task.data_loaded = True

    task.load_data = load_data
    if size == "small" and hasattr(task, "max_documents_per_cluster"):
        # mteb 2's clustering draws max_documents_per_cluster (16384) documents with replacement from the few it
        # embeds, 10 times per level: on "small" data that only repeats the same 24 (~1 s of k-means per draw)
        task.max_documents_per_cluster = _SMALL["clustered"]
    task.synthetic = {"size": size, "seed": int(seed), "version": VERSION}
    task.dataset, task.data_loaded = None, False
    return task


def synthetic_task(name: str, size: str = "small", seed: int = 0):
    import mteb

    return synthesize(mteb.get_task(name), size, seed)
