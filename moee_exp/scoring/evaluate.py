"""Score one encoder on tasks with mteb's own evaluators; one result row per dataset."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator

import mteb

from ..errors import DatasetUnavailableError
from . import fast_columns

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


def score_row_of(task, split: str, main: float, scores: dict, main_score_name: str | None = None) -> dict:
    """The row of a score computed outside mteb.evaluate, shaped like ``score_row``'s (one 'default' subset);
    ``main_score_name`` names the computation's own main score (default: mteb's for the task)."""
    meta = task.metadata
    return {
        "task": meta.name, "task_type": meta.type, "split": split, "main_score_name": main_score_name or meta.main_score,
        "main_score": float(main),
        # mteb's layout: one dict per hf_subset (a single dict is the 'default' subset)
        "scores": list(scores) if isinstance(scores, list) else [{**dict(scores), "main_score": float(main),
                                                                  "hf_subset": "default"}],
    }


def main_score(encoder, task, split: str, batch_size: int = 32) -> float:
    """mteb's main score of ``task`` on ``split`` (one of its eval_splits), nothing saved (weights=dev's grid)."""
    fast_columns.install()
    result = mteb.evaluate(encoder, task, cache=None, co2_tracker=False, encode_kwargs={"batch_size": batch_size},
                           show_progress_bar=False)
    (task_result,) = result.task_results
    return float(task_result.get_score(splits=[split]))


def load_data(task) -> None:
    """Load a task's data first (mteb.evaluate then reuses it), so a dataset that cannot be had is one clear error,
    not a traceback from inside mteb / datasets; the rows of the datasets scored before it are kept."""
    if getattr(task, "data_loaded", False) or not hasattr(task, "load_data"):
        return
    try:
        task.load_data()
    except OSError as err:  # datasets' ConnectionError / DatasetNotFoundError / a full disk are all OSErrors
        path = task.metadata.dataset.get("path", "?")
        raise DatasetUnavailableError(
            f"the data of task {task.metadata.name} ({path}) could not be loaded ({err.__class__.__name__}: {err}); "
            "it is not in the HF datasets cache and the hub is not reachable here: run once with network access "
            "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE unset) to cache it, or drop it from tasks.names"
        ) from None


def job_progress(tasks, progress: bool = True):
    """The job's datasets, with one progress bar over them (time left included) on a terminal; where output goes to a
    file (a SLURM log), one line per dataset instead of a bar's carriage returns."""
    tasks = list(tasks)
    if not progress or not tasks:
        yield from tasks
        return
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        with tqdm(tasks, desc="datasets", unit="dataset") as bar:
            for task in bar:
                bar.set_postfix_str(task.metadata.name)
                yield task
        return
    start = time.perf_counter()
    for k, task in enumerate(tasks):
        elapsed = time.perf_counter() - start
        left = f", ~{elapsed / k * (len(tasks) - k):.0f} s left" if k else ""
        log.info("dataset %d/%d: %s (%.0f s elapsed%s)", k + 1, len(tasks), task.metadata.name, elapsed, left)
        yield task


def evaluate_tasks(
    encoder, tasks, *, batch_size: int = 32, progress: bool = True, prediction_folder=None, prediction_types=(),
    prepare=None, result_cache=None, score=None,
) -> Iterator[dict]:
    """Yield a row per dataset as soon as it is scored, so a caller can save it before the next one starts.

    For tasks whose type is in ``prediction_types``, mteb's own per-item predictions (STS: each pair's similarity;
    Clustering: each text's cluster id) go to ``prediction_folder/<task>_predictions.json`` (read by analysis/).
    ``prepare(task)``, called before a task is scored, sets up the encoder for it (moee_exp.scoring.weights: its α) and
    returns fields for its row.
    With a ``result_cache`` (mteb.ResultCache), each TaskResult is also saved there in mteb's own layout, under the
    encoder's ModelMeta; it is written, never read (mteb.evaluate still gets cache=None).
    ``score(task, split) -> (main_score, scores)`` replaces mteb's evaluation (protocol=paper's MoEE(sum): the
    public code's scoring, moee_exp.scoring.paper_scoring); it writes no predictions and no mteb result file.
    """
    fast_columns.install()  # datasets' lazy columns read in one batch, not row by row (moee_exp.scoring.fast_columns)
    for task in job_progress(tasks, progress):
        split = "test" if "test" in task.metadata.eval_splits else task.metadata.eval_splits[0]
        loaded_here = not getattr(task, "data_loaded", True)
        extra = prepare(task) if prepare else {}
        start = time.perf_counter()
        load_data(task)
        if score is not None:
            main, scores = score(task, split)
            name = getattr(score, "main_score_name", None)
            row = {**score_row_of(task, split, main, scores, name(task) if name else None), **extra}
            row["eval_time_s"] = round(time.perf_counter() - start, 3)
            log.info("%s (%s): %s = %.4f", row["task"], row["task_type"], row["main_score_name"], row["main_score"])
            yield row
            continue
        result = mteb.evaluate(
            encoder,
            task,
            cache=None,  # results are ours to keep (moee_exp.jobs.record); mteb's cache would reuse stale scores
            co2_tracker=False,
            # one bar per job (job_progress), not one per encode call or per reranking pass
            encode_kwargs={"batch_size": batch_size, "show_progress_bar": False},
            show_progress_bar=False,
            prediction_folder=prediction_folder if task.metadata.type in prediction_types else None,
        )
        (task_result,) = result.task_results
        if result_cache is not None:
            result_cache.save_to_cache(task_result, encoder.mteb_model_meta, encode_kwargs={"batch_size": batch_size})
        if loaded_here and getattr(task, "data_loaded", False):  # prepare loaded it, so mteb kept it: free it
            task.unload_data()
        row = {**score_row(task, task_result, split), **extra}
        row["eval_time_s"] = round(time.perf_counter() - start, 3)
        log.info("%s (%s): %s = %.4f", row["task"], row["task_type"], row["main_score_name"], row["main_score"])
        yield row
