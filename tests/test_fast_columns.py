"""moee_exp.scoring.fast_columns: datasets' lazy Column read in one batch gives the same values and the same mteb scores."""

import numpy as np
import pytest
from conftest import tiny_model_cfg
from datasets import ClassLabel, Dataset, Features, List, Value, load_from_disk

from moee_exp.features.cache import open_cache
from moee_exp.features.featurize import Featurizer
from moee_exp.features.prompts import TEMPLATES
from moee_exp.scoring import evaluate, fast_columns
from moee_exp.scoring.encoder import MoEEEncoder
from moee_exp.scoring.tasks import get_tasks

# one xdist worker runs this module: its module-scoped fixture is built once, not once per worker
pytestmark = pytest.mark.xdist_group("test_fast_columns")

# one real mteb class per paper task type (synthetic data of its schema), and our classification demo task
TASKS = ["EmotionClassification", "TwentyNewsgroupsClustering", "TwitterSemEval2015", "AskUbuntuDupQuestions",
         "STS12", "SummEval"]


@pytest.fixture
def patched():
    fast_columns.uninstall()
    yield
    fast_columns.uninstall()


def _dataset() -> Dataset:
    features = Features({"text": Value("string"), "label": ClassLabel(names=["a", "b", "c"]),
                         "ids": List(Value("int64")), "score": Value("float32")})
    rows = {"text": [f"t{i}" if i % 5 else None for i in range(40)], "label": [i % 3 for i in range(40)],
            "ids": [list(range(i % 4)) for i in range(40)], "score": [i / 7 for i in range(40)]}
    return Dataset.from_dict(rows, features=features)


def _asarray(col):
    try:
        return np.asarray(col).tolist()
    except ValueError as err:  # ragged lists: numpy refuses them either way
        return type(err).__name__


def _reads(ds) -> dict:
    """Every way mteb reads a column, per column, on a view with an indices mapping too."""
    out = {}
    for view_name, view in (("plain", ds), ("select", ds.select([5, 3, 3, 39, 0, 17])), ("shuffled", ds.shuffle(seed=1))):
        for name in ds.column_names:
            col = view[name]
            out[view_name, name] = (
                list(col), col[0], col[-1], col[np.int64(2)], col[1:4], col[[2, 0]], len(col),
                _asarray(col), Dataset.from_dict({"x": view[name]}).to_dict()["x"],
            )
    return out


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_a_column_reads_the_same_values_in_one_batch(patched, monkeypatch, storage, tmp_path):
    ds = _dataset()
    if storage == "disk":  # memory-mapped Arrow files, as datasets loaded from the hub cache are
        ds.save_to_disk(tmp_path / "ds")
        ds = load_from_disk(tmp_path / "ds")
    expected = _reads(ds)
    assert fast_columns.install()
    per_row = []
    original = fast_columns._original["__getitem__"]
    monkeypatch.setitem(fast_columns._original, "__getitem__", lambda self, key: per_row.append(key) or original(self, key))
    got = _reads(ds)
    assert got == expected
    # ... and really from the batch: only the first single rows, slices and lists of indices (one batch read by
    # datasets itself) went to datasets' own __getitem__
    assert per_row and all(isinstance(k, (list, slice)) for k in per_row)


def test_single_rows_switch_to_the_batch_after_a_few(patched, monkeypatch):
    fast_columns.install()
    per_row = []
    original = fast_columns._original["__getitem__"]
    monkeypatch.setitem(fast_columns._original, "__getitem__", lambda self, key: per_row.append(key) or original(self, key))
    col = _dataset()["label"]
    assert [col[i] for i in range(40)] == [i % 3 for i in range(40)]
    assert len(per_row) == fast_columns.ROW_READS_BEFORE_BATCH  # a peek at a huge column stays a peek


def test_formatted_datasets_keep_datasets_own_path(patched):
    ds = _dataset().with_format("numpy")
    before = [type(x) for x in ds["label"]]
    fast_columns.install()
    col = ds["label"]
    assert [type(x) for x in col] + [type(col[i]) for i in range(40)] == before * 2  # numpy scalars, as datasets'
    assert "_moee_values" not in vars(col)  # ... and nothing read in one batch


def test_off_when_asked(patched, monkeypatch):
    monkeypatch.setenv("MOEE_FAST_COLUMNS", "0")
    assert not fast_columns.install()
    col = Dataset.from_dict({"a": list(range(40))})["a"]
    assert [col[i] for i in range(40)] == list(col) == list(range(40))
    assert fast_columns._original == {} and "_moee_values" not in vars(col)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    cache = open_cache({"dir": tmp_path_factory.mktemp("features")})  # the second pass reads the first's features
    featurizer = Featurizer(tiny_model_cfg("tiny"), TEMPLATES["prompteol"], progress=False, cache=cache)
    return MoEEEncoder(featurizer, "moee_sum", alpha=0.4)


def test_mteb_scores_are_unchanged_on_every_task_type(encoder, patched, monkeypatch):
    def scores():
        tasks = [*get_tasks(TASKS, data="synthetic", size="small"), *get_tasks(["MoEEDemoClassification"])]
        return {row["task"]: (row["main_score"], row["scores"])
                for row in evaluate.evaluate_tasks(encoder, tasks, progress=False)}

    monkeypatch.setenv("MOEE_FAST_COLUMNS", "0")
    before = scores()
    assert not fast_columns._original  # the reference ran on datasets' own Column
    monkeypatch.setenv("MOEE_FAST_COLUMNS", "1")
    after = scores()
    assert fast_columns._original
    assert len(before) == len(TASKS) + 1 and before.keys() == after.keys()
    for name, (main, all_scores) in before.items():
        assert after[name][0] == main, name  # exactly: same values, same embeddings, mteb's own evaluators
        assert after[name][1] == all_scores, name  # every metric of every subset
