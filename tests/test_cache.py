"""The feature cache: hits are bit-identical, bad shards are recomputed, cached jobs never build the model,
concurrent writers do not corrupt it, and length-sorted extraction keeps input order."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tiny_model_cfg
from jobs import compose

from moee_exp.features import featurize
from moee_exp.features.cache import FeatureCache, identity_hash, text_key
from moee_exp.features.extract import extract, length_batches, prompt_texts
from moee_exp.features.featurize import Featurizer
from moee_exp.features.identity import model_identity
from moee_exp.features.prompts import TEMPLATES

WORDS = "the cat sat on a mat while dogs ran across green fields under grey skies and rain fell".split()
# Mixed lengths (1..40 words), all distinct, in no particular order.
TEXTS = [" ".join(WORDS[(i * 7) % len(WORDS) :] + WORDS)[: 1 + (i * 37) % 200] + f" #{i}" for i in range(23)]


_collect = __import__("gc").collect


def make(cache=None, features=("hs", "rw"), **model):
    cfg = {**tiny_model_cfg("tiny"), "batch_size": 4, **model}
    return Featurizer(cfg, TEMPLATES["prompteol"], progress=False, features=features, cache=cache)


@pytest.fixture
def fresh_process():
    """Forget loaded models (as a new process would) and return a function counting model loads since."""
    featurize._loaded.clear()
    start = featurize.load_count
    return lambda: featurize.load_count - start


@contextmanager
def cache_log_lines():
    """The feature cache's log lines, read from its own logger: what an earlier test in the same xdist worker did to
    the root logger's handlers (pytest's log capture included) cannot hide them."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("moee_exp.features.cache")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


def shards(root: Path, feature: str) -> list[Path]:
    return sorted(root.glob(f"*/{feature}/*.npy"))


def test_loading_another_model_frees_the_previous_one_and_collects_only_for_a_large_one(fresh_process, monkeypatch):
    import gc
    import weakref

    collections = []
    monkeypatch.setattr(gc, "collect", lambda *args: collections.append(args) or _collect(*args))
    previous = weakref.ref(featurize.get_model(tiny_model_cfg()).model)
    featurize.get_model({**tiny_model_cfg(), "dtype": "bfloat16"})
    assert fresh_process() == 2 and collections == []  # a tiny CPU model: freed without a full collection
    assert previous() is None
    previous = weakref.ref(featurize.get_model({**tiny_model_cfg(), "dtype": "bfloat16"}).model)
    monkeypatch.setattr(featurize, "COLLECT_BYTES", 0)  # as a real model would be
    featurize.get_model(tiny_model_cfg())
    assert fresh_process() == 3 and len(collections) == 1
    assert previous() is None  # only one model is held at a time


def test_hit_is_bit_identical_and_needs_no_model(tmp_path, fresh_process):
    plain = make()(TEXTS)  # no cache: what extraction gives
    first = make(FeatureCache(tmp_path))(TEXTS)
    assert fresh_process() == 1
    for name in ("hs", "rw"):
        assert first[name].dtype == np.float32 and first[name].shape[0] == len(TEXTS)
        assert np.array_equal(first[name], plain[name])

    featurize._loaded.clear()  # a new job in a new process: nothing in memory, only the files
    loads = fresh_process()
    again = make(FeatureCache(tmp_path))(list(reversed(TEXTS)))
    assert fresh_process() == loads  # no model (and no tokenizer) was constructed
    for name in ("hs", "rw"):
        assert np.array_equal(again[name], plain[name][::-1])


def test_partial_hit_extracts_only_what_is_missing(tmp_path, fresh_process, caplog):
    cache = FeatureCache(tmp_path)
    make(cache)(TEXTS[:10])
    caplog.set_level(logging.INFO, logger="moee_exp.features.featurize")
    # rw cached for 10 texts; hs_mean_tokens for none: all 23 texts extracted, rw of the 10 read from the cache
    feats = make(cache, features=("hs_mean_tokens", "rw"))(TEXTS)
    assert "23 text(s), 0 from the feature cache, 23 extracted" in caplog.text
    plain = make(features=("hs_mean_tokens", "rw"))(TEXTS)
    np.testing.assert_allclose(feats["hs_mean_tokens"], plain["hs_mean_tokens"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(feats["rw"], plain["rw"], rtol=0, atol=1e-5)
    # no text is written twice: rw shards hold 23 distinct keys
    keys = [np.load(p)["key"].tobytes() for p in shards(tmp_path, "rw")]
    assert sum(len(k) for k in keys) == 23 * 16
    caplog.clear()
    make(cache, features=("hs_mean_tokens", "rw"))(TEXTS[5:20])
    make(cache)(TEXTS[2:8])  # hs was cached for the first 10 only
    assert "15 text(s), 15 from the feature cache, 0 extracted" in caplog.text
    assert "6 text(s), 6 from the feature cache, 0 extracted" in caplog.text


def test_repeated_texts_are_extracted_once_and_each_gets_its_row(tmp_path, fresh_process, caplog):
    """Each distinct text is hashed, looked up and extracted once; every occurrence gets its features, in order."""
    plain = make()(TEXTS[:6])
    cache = FeatureCache(tmp_path)
    make(cache)(TEXTS[:3])
    order = [4, 0, 4, 5, 1, 0, 4, 3]
    caplog.set_level(logging.INFO, logger="moee_exp.features.featurize")
    feats = make(cache)([TEXTS[i] for i in order])
    assert "8 text(s), 3 from the feature cache, 3 extracted" in caplog.text  # 4, 5, 3 once each
    assert sum(len(np.load(p)) for p in shards(tmp_path, "hs")) == 6
    featurize._loaded.clear()
    loads = fresh_process()
    again = make(FeatureCache(tmp_path))([TEXTS[i] for i in order])
    assert fresh_process() == loads
    for name in ("hs", "rw"):
        np.testing.assert_allclose(feats[name], plain[name][order], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(again[name], feats[name])


@pytest.mark.parametrize("damage", ["truncate", "flip_byte", "garbage"])
def test_bad_shard_is_detected_removed_and_recomputed(tmp_path, fresh_process, damage):
    good = make(FeatureCache(tmp_path))(TEXTS)
    (bad,) = shards(tmp_path, "hs")
    data = bad.read_bytes()
    if damage == "truncate":  # a copy cut short
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "flip_byte":  # same size, one value changed
        bad.write_bytes(data[:-5] + bytes([data[-5] ^ 0x40]) + data[-4:])
    else:
        bad.write_bytes(b"\x93NUMPY not really")
    # a killed writer's temp file is ignored, never read
    (bad.parent / ".tmp-1-dead.npy").write_bytes(b"half")

    featurize._loaded.clear()
    loads = fresh_process()
    with cache_log_lines() as lines:
        feats = make(FeatureCache(tmp_path))(TEXTS)
    logged = "\n".join(lines)
    assert "bad shard" in logged and bad.name in logged, lines
    assert ".tmp-1-dead" not in logged
    assert fresh_process() == loads + 1  # the hs of every text was extracted again
    assert np.array_equal(feats["hs"], good["hs"]) and np.array_equal(feats["rw"], good["rw"])
    assert (bad.parent / ".tmp-1-dead.npy").exists()

    # the repaired cache is whole again: a new reader finds everything, warns about nothing, loads nothing
    featurize._loaded.clear()
    loads = fresh_process()
    with cache_log_lines() as lines:
        again = make(FeatureCache(tmp_path))(TEXTS)
    assert fresh_process() == loads and not any("bad shard" in line for line in lines)
    assert np.array_equal(again["hs"], good["hs"])


def test_float16_storage_is_consistent_and_half_size(tmp_path):
    f32 = make(FeatureCache(tmp_path / "a"))(TEXTS)
    first = make(FeatureCache(tmp_path / "b", dtype="float16"))(TEXTS)
    hit = make(FeatureCache(tmp_path / "b", dtype="float16"))(TEXTS)
    for name in ("hs", "rw"):
        assert first[name].dtype == np.float32
        assert np.array_equal(first[name], f32[name].astype(np.float16).astype(np.float32))
        assert np.array_equal(hit[name], first[name])  # a miss returns what a later hit will
        assert not np.array_equal(first[name], f32[name])
    (s32,), (s16,) = shards(tmp_path / "a", "hs"), shards(tmp_path / "b", "hs")
    assert np.load(s16)["value"].dtype == np.float16
    # compact: the records are key + values, nothing else but the .npy header
    hidden = f32["hs"].shape[1]
    assert s32.stat().st_size - len(TEXTS) * (16 + 4 * hidden) < 200
    assert s16.stat().st_size - len(TEXTS) * (16 + 2 * hidden) < 200


def test_truncation_is_counted_on_hits_too(tmp_path):
    long_texts = [" ".join(WORDS * 3) + f" {i}" for i in range(3)] + ["a", "b c", "d"]
    miss = make(FeatureCache(tmp_path), max_length=24)
    miss(long_texts)
    hit = make(FeatureCache(tmp_path), max_length=24)
    hit(long_texts)
    plain = make(max_length=24)
    plain(long_texts)
    assert 3 <= plain.n_truncated < len(long_texts)
    assert miss.n_truncated == hit.n_truncated == plain.n_truncated


def test_namespace_keys_what_changes_features_and_builds_nothing(tmp_path):
    base = make(FeatureCache(tmp_path))
    key = identity_hash(base.namespace().identity)
    same = make(FeatureCache(tmp_path), batch_size=7, padding_side="right")  # features do not depend on these
    assert identity_hash(same.namespace().identity) == key
    for change in (dict(max_length=64), dict(dtype="bfloat16"), dict(quantization="4bit"), dict(revision="v2")):
        assert identity_hash(make(FeatureCache(tmp_path), **change).namespace().identity) != key, change
    other_prompt = Featurizer(tiny_model_cfg(), TEMPLATES["none"], cache=FeatureCache(tmp_path))
    assert identity_hash(other_prompt.namespace().identity) != key
    assert identity_hash({**base.namespace().identity, "cache_dtype": "float16"}) != key

    cfg = tiny_model_cfg()
    cfg["tiny"] = {**cfg["tiny"], "seed": 12345}  # a tiny model nobody built
    cfg["cache_dir"] = str(tmp_path / "models")
    ident = model_identity(cfg)
    assert ident["model"].startswith("tiny/olmoe-") and ident["model"] != model_identity(tiny_model_cfg())["model"]
    assert not (tmp_path / "models").exists()  # computing the key built nothing


WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[3])
    from moee_exp.features.cache import FeatureCache, text_key  # imports no torch: a fast start
    root, seed = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(seed)
    ns = FeatureCache(root).namespace({"test": "concurrency"})
    for _ in range(40):
        ids = rng.choice(400, size=60, replace=False)
        keys = [text_key(f"text {i}") for i in ids]
        values = np.stack([np.full(512, i, np.float32) + np.arange(512, dtype=np.float32) for i in ids])
        ns.put(keys, "hs", values)
        ns.put(keys, "rw", -values[:, :8].reshape(-1, 2, 4))
    """
)


def test_concurrent_writers_do_not_corrupt(tmp_path, caplog):
    module = str(ROOT)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(seed), module]) for seed in range(4)]
    caplog.set_level(logging.WARNING)
    reads = 0
    while any(p.poll() is None for p in procs):  # read while they write: every shard seen must be whole
        ns = FeatureCache(tmp_path).namespace({"test": "concurrency"})
        keys = [text_key(f"text {i}") for i in range(400)]
        found = np.flatnonzero(ns.contains(keys, "hs"))
        if len(found):
            got = ns.get([keys[i] for i in found], "hs")
            assert np.array_equal(got[:, 0], found.astype(np.float32))
            reads += 1
    assert all(p.wait() == 0 for p in procs)
    assert "bad shard" not in caplog.text and "dropping" not in caplog.text

    ns = FeatureCache(tmp_path).namespace({"test": "concurrency"})
    keys = [text_key(f"text {i}") for i in range(400)]
    present = ns.contains(keys, "hs")
    assert present.sum() > 350  # 4 × 40 random draws of 60 cover nearly all 400
    idx = np.flatnonzero(present)
    hs = ns.get([keys[i] for i in idx], "hs")
    assert np.array_equal(hs, idx[:, None].astype(np.float32) + np.arange(512, dtype=np.float32))
    rw_idx = np.flatnonzero(ns.contains(keys, "rw"))
    assert np.array_equal(ns.get([keys[i] for i in rw_idx], "rw")[:, 0, 0], -rw_idx.astype(np.float32))
    assert not list(tmp_path.glob("*/*/.tmp-*"))  # no temp file left behind
    # bounded: each writer writes a text at most once, so at most 4 copies; usually far fewer
    rows = sum(len(np.load(p)) for p in shards(tmp_path, "hs"))
    assert present.sum() <= rows <= 4 * present.sum()


def test_length_sorted_batches_keep_input_order(tiny_lm):
    lm = tiny_lm("tiny")
    prompted = prompt_texts(TEXTS, TEMPLATES["prompteol"], lm.tokenizer, 512).texts
    lengths = [len(lm.tokenizer(t)["input_ids"]) for t in prompted]
    batches = length_batches(lengths, 4)
    assert sorted(i for b in batches for i in b) == list(range(len(TEXTS)))
    assert [lengths[i] for b in batches for i in b] == sorted(lengths, reverse=True)
    padded = lambda bs: sum(len(b) * max(lengths[i] for i in b) for b in bs)  # noqa: E731
    in_order = [list(range(i, min(i + 4, len(TEXTS)))) for i in range(0, len(TEXTS), 4)]
    assert padded(batches) < padded(in_order)

    sorted_feats = extract(lm, prompted, batch_size=4, progress=False)
    one_by_one = extract(lm, prompted, batch_size=1, progress=False)  # no batching, no sorting at all
    for name in ("hs", "rw"):
        np.testing.assert_allclose(sorted_feats[name], one_by_one[name], rtol=0, atol=1e-5)
    # each row is its own text's: rows differ from each other
    assert np.abs(sorted_feats["hs"][0] - sorted_feats["hs"][1]).max() > 1e-3


def test_length_batches_bound_padding_on_a_long_tail():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in np.concatenate([rng.integers(20, 40, 300), rng.integers(40, 512, 40)])]
    batches = length_batches(lengths, 32)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert max(len(b) for b in batches) == 32
    for b in batches:
        assert max(lengths[i] for i in b) * len(b) <= sum(lengths[i] for i in b) / 0.9
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches) / sum(lengths)
    assert total <= 1.11
    assert len(batches) <= -(-len(lengths) // 32) + 22 * 2  # 20..512 spans < 100x: at most ~44 extra cuts


def test_length_batches_pad_no_batch_longer_than_exact_above():
    """A model whose padding is exact only up to k tokens (sparse attention: extract.padding_exact_up_to): longer
    texts share a batch only with texts of their own length; the end-to-end check is docs/coverage.md's dots3_note
    row (tests/test_coverage.py), which differs without this."""
    lengths = [40, 9, 39, 40, 30, 16, 17]
    assert length_batches(lengths, 32, max_padding=1.0) == [[0, 3, 2, 4, 6, 5, 1]]
    assert length_batches(lengths, 32, max_padding=1.0, exact_above=16) == [[0, 3], [2], [4], [6], [5, 1]]


def test_sweep_jobs_after_the_first_never_build_the_model(tmp_path, fresh_process, monkeypatch):
    from moee_exp.jobs.runner import run_job

    common = [
        "logger=none",
        "progress=false",
        "tasks.names=[MoEEDemoSTS,MoEEDemoReranking]",
        f"cache.dir={tmp_path / 'features'}",
    ]
    cfgs = [compose(*common, *o) for o in (["emb=hs"], ["emb=rw"], ["weights.alpha=0.3"])]
    off = compose(*common, "weights.alpha=0.3", "cache=off")
    rows = run_job(cfgs[0], tmp_path / "0", "g")
    assert fresh_process() == 1 and len(rows) == 2

    featurize._loaded.clear()  # no in-memory model to reuse: only the cache can spare the load

    def no_load(*args, **kwargs):
        raise AssertionError("the model was constructed although every feature was cached")

    monkeypatch.setattr(featurize, "load_model", no_load)
    cached = [run_job(cfg, tmp_path / str(i), "g") for i, cfg in enumerate(cfgs[1:], 1)]
    assert fresh_process() == 1
    monkeypatch.undo()

    uncached = run_job(off, tmp_path / "off", "g")  # cache off: extracts again, same scores
    assert fresh_process() == 2
    assert [r["main_score"] for r in cached[1]] == [r["main_score"] for r in uncached]
    assert {r["emb"] for r in cached[0]} == {"rw"} and all(np.isfinite(r["main_score"]) for r in cached[1])
