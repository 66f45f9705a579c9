"""moee_exp.scoring.synthetic_tasks: the real mteb task classes get data of their own schema, sized from their metadata."""

import mteb
import numpy as np
import pytest
import yaml
from conftest import ROOT

from moee_exp.scoring.synthetic_tasks import generate, plan, synthesize, synthetic_task

PAPER = yaml.safe_load((ROOT / "conf/tasks/paper.yaml").read_text())["names"]


def _one(task, data):
    return data["default"]["test"] if task.metadata.type == "Reranking" else data["test"]


def test_real_size_is_the_size_mteb_reports_for_every_paper_task():
    for name in PAPER:
        task = mteb.get_task(name)
        stats = task.metadata.descriptive_stats  # mteb's own numbers for the real data
        for split, shape in plan(task, "real")["default"].items():
            n_real = stats[split]["num_samples"]
            if task.metadata.type == "Clustering":  # legacy layout: texts spread over 10 sets
                assert abs(shape["sets"] * shape["n"] - n_real) < shape["sets"], name
            elif task.metadata.type == "Reranking":  # num_samples counts queries + candidate documents
                assert shape["n"] + shape["n_docs"] == n_real, name
            elif task.metadata.type == "Summarization":
                assert shape["n"] == n_real and shape["human"] >= 2 and shape["machine"] >= 2, name
            else:
                assert shape["n"] == n_real, name
    # spot checks against the published dataset sizes (mteb 1.x papers / dataset cards)
    assert plan(mteb.get_task("AskUbuntuDupQuestions"), "real")["default"]["test"]["n"] == 361
    assert plan(mteb.get_task("SummEval"), "real")["default"]["test"]["machine"] == 16
    assert plan(mteb.get_task("STSBenchmark"), "real")["default"]["test"]["n"] == 1379


def test_real_size_generates_real_counts_and_lengths():
    task = synthetic_task("BIOSSES", "real")
    task.load_data()
    ds = task.dataset["test"]
    assert len(ds) == 100
    mean_len = np.mean([len(t) for t in ds["sentence1"]])
    assert 0.7 * 154.7 < mean_len < 1.3 * 154.7  # mteb: average_text_length 154.67


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = (generate(mteb.get_task("STS12"), "small", seed) for seed in (0, 0, 1))
    assert a["test"].to_dict() == b["test"].to_dict()
    assert a["test"]["sentence1"] != c["test"]["sentence1"]


@pytest.mark.parametrize("name", PAPER)
def test_small_data_has_the_class_schema_and_does_not_degenerate(name):
    task = mteb.get_task(name)
    data = generate(task, "small")
    kind = task.metadata.type
    if kind == "Reranking":
        split = data["default"]["test"]
        assert set(split) == {"corpus", "queries", "relevant_docs", "top_ranked"}
        assert {"id", "text"} <= set(split["corpus"].column_names) and {"id", "text"} <= set(split["queries"].column_names)
        rel = [s for q in split["relevant_docs"].values() for s in q.values()]
        assert set(rel) == {0, 1}  # candidates both relevant and not
        corpus = set(split["corpus"]["id"])
        for qid in split["queries"]["id"]:
            assert set(split["top_ranked"][qid]) <= corpus and split["relevant_docs"][qid]
        return
    assert set(data) >= set(task.eval_splits)
    test = data["test"]
    if kind == "STS":
        assert set(test.column_names) == {*task.column_names, "score"}
        assert min(test["score"]) == task.min_score and max(test["score"]) == task.max_score
    elif kind == "PairClassification":
        assert set(test.column_names) == {task.input1_column_name, task.input2_column_name, task.label_column_name}
        assert set(test[task.label_column_name]) == {0, 1} and len(test) > 1
    elif kind == "Classification":
        assert set(data) == {"test", task.train_split}
        labels = set(data[task.train_split][task.label_column_name])
        assert len(labels) >= 2 and set(test[task.label_column_name]) == labels
    elif kind == "Clustering":
        for labels in test[task.label_column_name]:
            assert len(set(labels)) >= 2
    elif kind == "Summarization":
        for rel in test[task.relevancy_column_name]:
            assert len(set(rel)) > 1 and task.min_score <= min(rel) and max(rel) <= task.max_score
    else:
        raise AssertionError(f"a paper task type without a check: {kind}")


def test_synthesize_keeps_the_real_class_and_survives_mteb_unloading():
    task = mteb.get_task("STS16")
    cls = type(task)
    assert synthesize(task) is task and type(task) is cls
    task.load_data()
    first = task.dataset["test"]["sentence1"]
    task.unload_data()  # what mteb.evaluate does after scoring a task it loaded
    task.load_data()
    assert task.dataset["test"]["sentence1"] == first
    assert task.synthetic["size"] == "small"


def test_a_multilingual_task_gets_every_subset_and_its_evaluator_runs_on_them():
    """Subsets come from the task's eval_langs: a multilingual task (STS22) is scored on each of them."""
    from conftest import tiny_model_cfg

    from moee_exp.features.featurize import Featurizer
    from moee_exp.features.prompts import TEMPLATES
    from moee_exp.scoring.encoder import MoEEEncoder

    task = synthesize(mteb.get_task("STS22", hf_subsets=["en", "de", "de-en"]))  # a filtered task: its own subsets
    assert task.metadata.is_multilingual and task.hf_subsets == ["en", "de", "de-en"]
    assert set(generate(task)) == {"en", "de", "de-en"}
    encoder = MoEEEncoder(Featurizer(tiny_model_cfg(), TEMPLATES["none"], progress=False), "moee_sum")
    (result,) = mteb.evaluate(encoder, task, cache=None, co2_tracker=False, show_progress_bar=False).task_results
    scored = {s["hf_subset"] for s in result.scores["test"]}
    assert scored == set(task.hf_subsets)
