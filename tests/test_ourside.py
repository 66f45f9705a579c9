"""Our side of a job made fast (issue 20): cache reads in file order, fusion in float32 row blocks, and moee_sum fused
into the cache read (SumSink) give what the code before gave: embeddings to 1e-6 and the same main scores."""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.ourside import _BeforeEncoder, fuse_before, get_before, main_scores  # noqa: E402
from moee_exp.features.cache import FeatureCache, text_key, text_keys  # noqa: E402
from moee_exp.features.extract import clean_text, clean_texts  # noqa: E402
from moee_exp.features.featurize import Featurizer  # noqa: E402
from moee_exp.scoring.encoder import MoEEEncoder  # noqa: E402
from moee_exp.scoring.fuse import fuse, sink_for, unit_rows  # noqa: E402
from moee_exp.scoring.tasks import get_tasks  # noqa: E402

# one xdist worker runs this module: its module-scoped fixture is built once, not once per worker
pytestmark = pytest.mark.xdist_group("test_ourside")

RNG = np.random.default_rng(1)
cache_mod = importlib.import_module("moee_exp.features.cache")
fuse_mod = importlib.import_module("moee_exp.scoring.fuse")  # (moee_exp.scoring.fuse the attribute is the function)


def features(n, hidden=40, layers=3, experts=8, offset=2.0):
    return {"hs": (RNG.standard_normal((n, hidden)) * 5 + offset).astype(np.float32),
            "rw": RNG.standard_normal((n, layers, experts)).astype(np.float32)}


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of a few rows, so a test's few hundred rows cross many block edges."""
    monkeypatch.setattr(fuse_mod, "ROWS", 7)
    monkeypatch.setattr(cache_mod, "GATHER_ROWS", 5)


@pytest.mark.parametrize("kind", ["hs", "rw", "moee_concat", "moee_sum"])
@pytest.mark.parametrize("standardize,activation", [("none", "logits"), ("text", "logits"), ("batch", "softmax"),
                                                    ("none", "softmax")])
def test_fuse_equals_the_fusion_before(small_blocks, kind, standardize, activation):
    feats = features(300)
    feats["hs"][5] = 0  # a zero row stays zero
    kw = dict(alpha=0.37, rw_activation=activation, standardize=standardize, standardize_batch_size=16)
    got, ref = fuse(feats, kind, **kw), fuse_before(feats, kind, **kw)
    assert got.dtype == np.float32 and got.shape == ref.shape
    if kind == "moee_sum" and standardize == "none" and activation == "logits":
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)  # float32 arithmetic: within ~1 ulp
    else:
        np.testing.assert_array_equal(got, ref)  # float64 in row blocks: the very same values


def test_unit_rows_survives_a_squared_norm_float32_cannot_hold():
    x = np.array([[3e19, 4e19], [0, 0], [3, 4]], np.float32)
    np.testing.assert_allclose(unit_rows(x, 2.0), [[1.2, 1.6], [0, 0], [1.2, 1.6]], rtol=1e-6)


def test_clean_texts_and_text_keys_equal_the_per_text_functions():
    texts = ["a", "", "é ü", "x\ud800y", None, 3, "ok"]
    assert clean_texts(texts) == [clean_text(t) for t in texts]
    assert clean_texts(["a", "b"]) == ["a", "b"]
    assert text_keys(clean_texts(texts)) == [text_key(clean_text(t)) for t in texts]


def filled_cache(tmp_path, n=120):
    """A namespace with n texts in 3 shards (one in float16), read back in a shuffled order with duplicates."""
    ns = FeatureCache(tmp_path).namespace({"t": 1})
    texts = [f"text {i}" for i in range(n)]
    feats = features(n)
    for part in (slice(0, 50), slice(50, 90), slice(90, n)):
        ks = [text_key(t) for t in texts[part]]
        ns.put(ks, "hs", feats["hs"][part])
        ns.put(ks, "rw", feats["rw"][part])
        ns.put(ks, "truncated", np.zeros(len(ks), bool))
    order = np.concatenate([RNG.permutation(n), RNG.integers(0, n, 60)])
    return ns, [texts[i] for i in order], {k: v[order] for k, v in feats.items()}


def test_get_returns_the_values_in_the_keys_order(small_blocks, tmp_path):
    ns, texts, feats = filled_cache(tmp_path)
    keys = text_keys(texts)
    for name in ("hs", "rw", "truncated"):
        np.testing.assert_array_equal(ns.get(keys, name), get_before(ns, keys, name))
    np.testing.assert_array_equal(ns.get(keys, "hs"), feats["hs"])
    out = np.full((len(keys), 50), np.nan, np.float32)  # into a view, through a function of each block of rows
    ns.get(keys, "hs", out[:, 10:], lambda rows: rows * 2)
    np.testing.assert_array_equal(out[:, 10:], feats["hs"] * 2)
    assert np.isnan(out[:, :10]).all()
    with pytest.raises(ValueError, match="shape"):
        ns.get(keys, "hs", out)


def test_locate_then_read_and_what_is_a_cache_miss(small_blocks, tmp_path):
    ns, texts, feats = filled_cache(tmp_path)
    keys = text_keys(texts)
    locs = ns.locate([*keys, text_key("not cached")], "hs")
    assert (locs[-1] == -1).all() and (locs[:-1] >= 0).all()
    np.testing.assert_array_equal(ns.contains([*keys, text_key("not cached")], "hs"), locs[:, 0] >= 0)
    np.testing.assert_array_equal(ns.read(locs[:-1], "hs"), feats["hs"])
    with pytest.raises(cache_mod.CacheMiss):  # a key not cached
        ns.read(locs, "hs")
    ns._drop("hs", int(locs[0, 0]))
    with pytest.raises(cache_mod.CacheMiss):  # locations taken before their shard was dropped
        ns.read(locs[:-1], "hs")
    # a shard written by this process and gone before its first read: dropped, its texts no longer cached
    other = FeatureCache(tmp_path / "other").namespace({"t": 2})
    other.put(keys[:5], "hs", feats["hs"][:5])
    (shard,) = (tmp_path / "other").glob("*/hs/*.npy")
    shard.unlink()
    with pytest.raises(cache_mod.CacheMiss):
        other.get(keys[:5], "hs")
    assert not other.contains(keys[:5], "hs").any()


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_moee_sum_read_through_the_sink_equals_fuse(small_blocks, tmp_path, alpha):
    ns, texts, feats = filled_cache(tmp_path)
    featurizer = Featurizer({"max_length": 512}, "{text}", progress=False, cache=FeatureCache(tmp_path))
    featurizer._namespaces[""] = featurizer.cache.namespace({"t": 1})
    sink = sink_for("moee_sum", alpha=alpha)  # the sink the encoder takes for MoEE(sum): RW scaled by sqrt(alpha)
    got = featurizer(texts, sink=sink)
    np.testing.assert_array_equal(sink.emb, fuse(feats, "moee_sum", alpha=alpha))  # identical, not just close
    np.testing.assert_allclose(sink.emb, fuse_before(feats, "moee_sum", alpha=alpha), rtol=0, atol=1e-6)
    assert np.shares_memory(got["hs"], sink.emb) and np.shares_memory(got["rw"], sink.emb)

    class Meta:
        name = "T"

    enc = MoEEEncoder(featurizer, "moee_sum", alpha=alpha)
    emb = enc.encode([{"text": texts[:70]}, {"text": texts[70:]}], task_metadata=Meta, hf_split="test",
                     hf_subset="default")
    np.testing.assert_array_equal(emb, sink.emb)


class FixedFeaturizer:
    """The tiny model's features, fixed per text: both encoders below see the same features."""

    def __init__(self, featurizer):
        self.featurizer = featurizer

    def __call__(self, texts, desc=None):
        return self.featurizer(texts)


@pytest.fixture(scope="module")
def tiny_features(tmp_path_factory):
    from conftest import tiny_model_cfg

    from moee_exp.features.prompts import TEMPLATES

    cache = FeatureCache(tmp_path_factory.mktemp("features"))
    return FixedFeaturizer(Featurizer(tiny_model_cfg("tiny"), TEMPLATES["prompteol"], progress=False, cache=cache))


@pytest.mark.parametrize("kind,alpha", [("moee_sum", 0.3), ("moee_concat", 1.0)])
def test_main_scores_unchanged(tiny_features, kind, alpha):
    """Every demo task scored with the fusion before and after: main scores equal to 1e-6."""
    feats = tiny_features
    std = "text" if kind == "moee_concat" else "none"
    for task in get_tasks(["MoEEDemoSTS", "MoEEDemoClassification", "MoEEDemoClustering", "MoEEDemoReranking"]):
        before = main_scores(task, _BeforeEncoder(feats, kind, alpha=alpha, standardize=std))
        after = main_scores(task, MoEEEncoder(feats, kind, alpha=alpha, standardize=std))
        assert before.keys() == after.keys() and before
        for key, value in before.items():
            assert after[key] == pytest.approx(value, abs=1e-6), key


def test_main_scores_of_the_runner_path_unchanged(tmp_path):
    """Through a real feature cache and the sink (the runner's path) versus the fusion before."""
    from conftest import tiny_model_cfg

    from moee_exp.features.prompts import TEMPLATES

    featurizer = Featurizer(tiny_model_cfg("tiny"), TEMPLATES["prompteol"], progress=False,
                            cache=FeatureCache(tmp_path))
    (task,) = get_tasks(["MoEEDemoSTS"])
    first = main_scores(task, MoEEEncoder(featurizer, "moee_sum", alpha=0.4))  # fills the cache
    again = main_scores(task, MoEEEncoder(featurizer, "moee_sum", alpha=0.4))  # read through the sink
    before = main_scores(task, _BeforeEncoder(featurizer, "moee_sum", alpha=0.4))
    assert first.keys() == again.keys() == before.keys()
    for key in before:
        assert again[key] == pytest.approx(before[key], abs=1e-6)
        assert first[key] == again[key]
