"""Score one encoder on tasks with mteb's own evaluators; one result row per dataset."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import mteb

log = logging.getLogger(__name__)


def score_row(task, result, split: str = "test") -> dict:
    """mteb's main score for the task (mean over subsets, as mteb aggregates) and every score it reports."""
    meta = task.metadata
    return {
        "task": meta.name,
        "task_type": meta.type,
        "split": split,
        "main_score_name": meta.main_score,
        "main_score": float(result.get_score(splits=[split])),
        "scores": result.scores.get(split, []),
    }


def evaluate_tasks(
    encoder,
    tasks,
    *,
    batch_size: int = 32,
    progress: bool = True,
    prediction_folder=None,
    prediction_types=(),
    result_cache=None,
) -> Iterator[dict]:
    """Yield a row per dataset as soon as it is scored, so a caller can save it before the next one starts.

    For tasks whose type is in ``prediction_types``, mteb's own per-item predictions (STS: each pair's similarity;
    Clustering: each text's cluster id) go to ``prediction_folder/<task>_predictions.json`` (read by analysis/).
    With a ``result_cache`` (mteb.ResultCache), each TaskResult is also saved there in mteb's own layout, under the
    encoder's ModelMeta; it is written, never read (mteb.evaluate still gets cache=None).
    """
    for task in tasks:
        split = "test" if "test" in task.metadata.eval_splits else task.metadata.eval_splits[0]
        start = time.perf_counter()
        result = mteb.evaluate(
            encoder,
            task,
            cache=None,  # results are ours to keep (moee_exp.record); mteb's cache would reuse stale scores
            co2_tracker=False,
            encode_kwargs={"batch_size": batch_size},
            show_progress_bar=progress,
            prediction_folder=prediction_folder if task.metadata.type in prediction_types else None,
        )
        (task_result,) = result.task_results
        if result_cache is not None:
            result_cache.save_to_cache(task_result, encoder.mteb_model_meta, encode_kwargs={"batch_size": batch_size})
        row = score_row(task, task_result, split)
        row["eval_time_s"] = round(time.perf_counter() - start, 3)
        log.info("%s (%s): %s = %.4f", row["task"], row["task_type"], row["main_score_name"], row["main_score"])
        yield row
