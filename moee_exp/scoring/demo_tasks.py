"""Six tiny offline mteb tasks, one per MoEE task type, for smoke runs.

The data are short hand-written English texts in ``moee_exp/data/demo/`` (one JSON
file per task); nothing is downloaded. Scores on them say nothing about a model's
quality: they only show that a pipeline runs end to end and produces sane numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from mteb.abstasks.abstask import AbsTask
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
from mteb.abstasks.pair_classification import AbsTaskPairClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.sts import AbsTaskSTS
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.abstasks.text.summarization import AbsTaskSummarization

DATA_DIR = Path(__file__).parents[1] / "data" / "demo"


def _read(file: str) -> Any:
    return json.loads((DATA_DIR / file).read_text(encoding="utf-8"))


def _metadata(name: str, task_type: str, main_score: str, file: str) -> TaskMetadata:
    # The revision is a hash of the data file, so cached mteb results go stale when the data change.
    revision = hashlib.sha256((DATA_DIR / file).read_bytes()).hexdigest()[:10]
    return TaskMetadata(
        name=name,
        type=task_type,
        main_score=main_score,
        description=f"A tiny hand-written English {task_type} demo set for offline smoke runs of moee_exp.",
        reference="https://arxiv.org/abs/2410.10814",
        dataset={"path": f"moee_exp/demo/{name}", "revision": revision},
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        date=("2026-11-23", "2026-11-23"),
        domains=["Constructed", "Written"],
        task_subtypes=[],
        license="not specified",
        annotations_creators="human-annotated",
        dialect=[],
        sample_creation="created",
        bibtex_citation="",
    )


class _SplitRows:
    """load_data for files shaped ``{split: [row, ...]}`` whose rows already use mteb's column names."""

    file: str

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        self.dataset = DatasetDict({split: Dataset.from_list(rows) for split, rows in _read(self.file).items()})
        self.data_loaded = True


class MoEEDemoSTS(_SplitRows, AbsTaskSTS):
    file = "sts.json"
    metadata = _metadata("MoEEDemoSTS", "STS", "cosine_spearman", file)
    min_score = 0
    max_score = 5


class MoEEDemoClassification(_SplitRows, AbsTaskClassification):
    file = "classification.json"
    metadata = _metadata("MoEEDemoClassification", "Classification", "accuracy", file)


class MoEEDemoPairClassification(_SplitRows, AbsTaskPairClassification):
    # Keep at least two rows: mteb reads a one-row split as the old format of one row holding lists.
    file = "pair_classification.json"
    metadata = _metadata("MoEEDemoPairClassification", "PairClassification", "max_ap", file)


class MoEEDemoSummarization(_SplitRows, AbsTaskSummarization):
    # mteb skips a text whose machine summaries all have the same relevance, so each text's scores differ.
    file = "summarization.json"
    metadata = _metadata("MoEEDemoSummarization", "Summarization", "cosine_spearman", file)
    min_score = 1
    max_score = 5


class MoEEDemoClustering(AbsTaskClusteringLegacy):
    # The legacy class clusters every document of each set; the newer AbsTaskClustering
    # embeds only a 4% sample by default, which is about one sentence here.
    file = "clustering.json"
    metadata = _metadata("MoEEDemoClustering", "Clustering", "v_measure", file)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        topics = _read(self.file)  # {topic: [sentence, ...]} -> one clustering set
        sentences = [s for group in topics.values() for s in group]
        labels = [topic for topic, group in topics.items() for _ in group]
        self.dataset = DatasetDict({"test": Dataset.from_dict({"sentences": [sentences], "labels": [labels]})})
        self.data_loaded = True


class MoEEDemoReranking(AbsTaskRetrieval):
    file = "reranking.json"
    metadata = _metadata("MoEEDemoReranking", "Reranking", "map_at_1000", file)

    def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
        rows = _read(self.file)
        # Content-derived ids: tie-breaking by id then cannot favour the relevant candidates.
        doc_id = {t: "d" + hashlib.md5(t.encode()).hexdigest()[:10] for r in rows for t in r["positive"] + r["negative"]}
        queries = [{"id": f"q{i}", "text": r["query"]} for i, r in enumerate(rows)]
        split = RetrievalSplitData(
            queries=Dataset.from_list(queries),
            corpus=Dataset.from_list([{"id": i, "text": t} for t, i in doc_id.items()]),
            relevant_docs={q["id"]: {doc_id[t]: 1 for t in r["positive"]} for q, r in zip(queries, rows)},
            top_ranked={q["id"]: [doc_id[t] for t in r["positive"] + r["negative"]] for q, r in zip(queries, rows)},
        )
        self.dataset = {"default": {"test": split}}
        self.data_loaded = True


DEMO_TASKS: dict[str, type[AbsTask]] = {
    cls.metadata.name: cls
    for cls in (
        MoEEDemoSTS,
        MoEEDemoClassification,
        MoEEDemoClustering,
        MoEEDemoPairClassification,
        MoEEDemoReranking,
        MoEEDemoSummarization,
    )
}


def get_demo_tasks(names: Iterable[str] | None = None) -> list[AbsTask]:
    """Fresh instances of the demo tasks, all of them by default, in ``DEMO_TASKS`` order."""
    names = list(DEMO_TASKS) if names is None else list(names)
    unknown = [n for n in names if n not in DEMO_TASKS]
    if unknown:
        raise KeyError(f"unknown demo tasks {unknown}; known: {list(DEMO_TASKS)}")
    return [DEMO_TASKS[n]() for n in names]
