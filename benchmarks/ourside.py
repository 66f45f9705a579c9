"""Our side of a job: feature-cache reads, fusion and the embeddings handed to mteb, per text, against a reference
implementation (the `ourside` section of benchmarks/bench.py; numbers in docs/benchmarks/our-side.md).

    python benchmarks/bench.py --sections ourside --threads 1 --repeats 5 --update docs/benchmarks/our-side.md

The case is TwitterURLCorpus at real size as the scale model counts it: 103,068 texts handed to the encoder, 45,633
of them distinct, with OLMoE-1B-7B's features (HS 2048, RW 16 x 64: MoEE 3072 dims) cached in two shards per
feature, as the first job writes them (one shard per encode call that extracts something). "Before" is the reference
implementation (kept below: the per-text cleaning and hashing, `Namespace.get` reading rows in the texts' order, fusion
in float64 over the whole array); "after" is the runner's own encoder (`MoEEEncoder.encode` over a `Featurizer`
reading the cache). Both run in this one process, interleaved, and the embeddings are compared. The scores are
compared on real-size synthetic paper datasets through mteb, with hashed bag-of-words HS / RW at OLMoE's sizes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

from moee_exp.features.cache import FeatureCache, Namespace, text_key, text_keys
from moee_exp.features.extract import clean_text, clean_texts
from moee_exp.features.featurize import TRUNCATED, Featurizer
from moee_exp.scoring.encoder import MoEEEncoder
from moee_exp.scoring.fuse import l2_normalize, rw_block, standardize_block

CASE = {"name": "TwitterURLCorpus", "texts": 103_068, "distinct": 45_633, "hidden": 2048, "layers": 16, "experts": 64}
SCORE_TASKS = ("STS12", "TwitterSemEval2015", "AskUbuntuDupQuestions", "EmotionClassification")
IDENTITY = {"bench": "ourside"}


# -- the code before issue 20, frozen (the reference for the ratios and for tests/test_ourside.py) ---------------


def fuse_before(features, kind, *, alpha=1.0, rw_activation="logits", standardize="none", standardize_batch_size=128,
                hs_feature="hs", rw_feature="rw") -> np.ndarray:
    hs = standardize_block(features[hs_feature].astype(np.float64), standardize, standardize_batch_size)
    rw = standardize_block(rw_block(features[rw_feature], rw_activation), standardize, standardize_batch_size)
    if kind == "hs":
        out = hs
    elif kind == "rw":
        out = rw
    elif kind == "moee_concat":
        out = np.concatenate([hs, rw], axis=1)
    else:
        out = np.concatenate([l2_normalize(hs), np.sqrt(alpha) * l2_normalize(rw)], axis=1)
    return out.astype(np.float32)


def get_before(ns: Namespace, keys, feature: str) -> np.ndarray:
    index, shards = ns._index[feature], ns._shards[feature]
    locs = np.array([index[k] for k in keys], dtype=np.int64).reshape(len(keys), 2)
    first = shards[locs[0, 0]]
    out = np.empty((len(keys), *first.shape), np.float32 if first.dtype.kind == "f" else first.dtype)
    for s in np.unique(locs[:, 0]):
        sel = np.flatnonzero(locs[:, 0] == s)
        arr = np.load(shards[s].path, mmap_mode="r", allow_pickle=False)
        out[sel] = arr["value"][locs[sel, 1]]
        del arr
    return out


def encode_before(ns: Namespace, inputs, kind: str, alpha: float) -> np.ndarray:
    texts = [clean_text(t) for t in (t for batch in inputs for t in batch["text"])]
    keys = [text_key(t) for t in texts]
    names = ("hs", "rw", TRUNCATED)
    for name in names:
        ns.refresh(name)
        index = ns._index[name]
        assert np.fromiter((k in index for k in keys), bool, len(keys)).all()
    feats = {name: get_before(ns, keys, name) for name in names}
    return np.asarray(fuse_before(feats, kind, alpha=alpha))


# -- the case ----------------------------------------------------------------------------------------------------


def make_case(root: Path, case: dict = CASE, seed: int = 0) -> list[str]:
    """Fill a feature cache at ``root`` with the case's distinct texts; return the texts handed to the encoder."""
    rng = np.random.default_rng(seed)
    words = "the a of to and in is it for on that with this be at by not are from".split()
    distinct = [f"{i} " + " ".join(rng.choice(words, 6 + i % 12)) for i in range(case["distinct"])]  # ~70 chars
    texts = distinct + [distinct[i] for i in rng.integers(0, len(distinct), case["texts"] - len(distinct))]
    rng.shuffle(texts)
    ns = FeatureCache(root).namespace(IDENTITY)
    keys = [text_key(t) for t in distinct]
    for part in (slice(0, len(keys) // 2), slice(len(keys) // 2, None)):
        n = len(keys[part])
        ns.put(keys[part], "hs", rng.standard_normal((n, case["hidden"]), dtype=np.float32))
        ns.put(keys[part], "rw", rng.standard_normal((n, case["layers"], case["experts"]), dtype=np.float32))
        ns.put(keys[part], TRUNCATED, np.zeros(n, bool))
    return texts


class _Meta:
    name = CASE["name"]


def section(args, log=print) -> dict:
    kind, alpha = "moee_sum", 0.5
    repeats = max(3, args.repeats)
    with tempfile.TemporaryDirectory(prefix="moee-ourside-") as tmp:
        texts = make_case(Path(tmp))
        inputs = [{"text": texts[i : i + 32]} for i in range(0, len(texts), 32)]  # mteb's batches of 32
        featurizer = Featurizer({"max_length": 512}, "{text}", progress=False, cache=FeatureCache(tmp))
        featurizer._namespaces[""] = featurizer.cache.namespace(IDENTITY)  # the case's namespace (no model identity)
        encoder = MoEEEncoder(featurizer, kind, alpha=alpha)
        before_ns = FeatureCache(tmp).namespace(IDENTITY)

        def after():
            return np.asarray(encoder.encode(inputs, task_metadata=_Meta, hf_split="test", hf_subset="default"))

        def before():
            return encode_before(before_ns, inputs, kind, alpha)

        ref, got = before(), after()  # warm-up: indexes read, pages in the page cache
        times = {"before": [], "after": []}
        for _ in range(repeats):
            for name, fn in (("before", before), ("after", after)):
                t = time.process_time()
                fn()
                times[name].append(time.process_time() - t)
        # of "after": the per-text Python (cleaning, finding the distinct texts, hashing and looking them up, as
        # Featurizer._cached does) without the reads and fusion
        t = time.process_time()
        cleaned = clean_texts(texts)
        distinct = {t: i for i, t in enumerate(dict.fromkeys(cleaned))}
        np.fromiter(map(distinct.__getitem__, cleaned), np.int64, len(cleaned))
        keys = text_keys(list(distinct))
        for name in ("hs", "rw", TRUNCATED):
            featurizer.namespace().locate(keys, name)
        per_text = time.process_time() - t
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"case": CASE, "kind": kind, "alpha": alpha, "repeats": repeats, "seconds": med,
           "us_per_text": {k: v / len(texts) * 1e6 for k, v in med.items()},
           "after_per_text_python_s": per_text,
           "max_abs_diff": float(np.abs(got - ref).max()), "identical_values": float(np.mean(got == ref))}
    log(f"  ourside: before {med['before']:.2f} s, after {med['after']:.2f} s", flush=True)
    out["scores"] = score_diff(args, log)
    return out


# -- scores: the same features fused before / after, through mteb -------------------------------------------------


class BowFeaturizer:
    """Hashed bag-of-words HS (hidden) and RW (layers x experts) per text: features with structure, at OLMoE's sizes."""

    def __init__(self, case: dict = CASE):
        self.case, self.vectors = case, {}

    def vec(self, word: str) -> np.ndarray:
        v = self.vectors.get(word)
        if v is None:
            rng = np.random.default_rng(zlib.crc32(word.encode()))
            v = self.vectors[word] = rng.standard_normal(self.case["hidden"] + self.case["layers"] * self.case["experts"])
        return v

    def __call__(self, texts, desc=None) -> dict:
        c = self.case
        out = np.zeros((len(texts), c["hidden"] + c["layers"] * c["experts"]), np.float32)
        for i, text in enumerate(texts):
            words = str(text).split()[:48]
            if words:
                out[i] = np.sum([self.vec(w) for w in words], axis=0)
        out[:, : c["hidden"]] += 3.0  # an offset, as real hidden states have: norms matter
        return {"hs": out[:, : c["hidden"]], "rw": out[:, c["hidden"] :].reshape(len(texts), c["layers"], c["experts"])}


class _BeforeEncoder(MoEEEncoder):
    def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kwargs):
        texts = [text for batch in inputs for text in batch["text"]]
        return fuse_before(self.model(texts), self.kind, **self.fuse_kwargs)


def main_scores(task, encoder) -> dict:
    import mteb

    res = mteb.evaluate(encoder, task, cache=None, co2_tracker=False, show_progress_bar=False,
                        encode_kwargs={"batch_size": 1024})
    return {f"{r.task_name}/{split}": r.get_score(splits=[split]) for r in res.task_results for split in r.scores}


def score_diff(args, log=print, tasks=SCORE_TASKS, size: str = "real") -> dict:
    """Main scores of moee_sum (alpha 0.5) with the fusion before and after, on synthetic data of ``size``."""
    import datasets

    from moee_exp.scoring import fast_columns
    from moee_exp.scoring.synthetic_tasks import synthetic_task

    datasets.disable_progress_bars()
    fast_columns.install()
    feats = BowFeaturizer()
    rows = {}
    for name in tasks:
        task = synthetic_task(name, size)
        task.load_data()
        a = main_scores(task, _BeforeEncoder(feats, "moee_sum", alpha=0.5))
        b = main_scores(task, MoEEEncoder(feats, "moee_sum", alpha=0.5))
        task.unload_data()
        rows[name] = {"before": a, "after": b, "diff": max(abs(b[k] - v) for k, v in a.items())}
        log(f"  ourside scores {name}: largest difference {rows[name]['diff']:.1e}", flush=True)
    return rows


def report(res: dict) -> str:
    c, s, u = res["case"], res["seconds"], res["us_per_text"]
    dims = c["hidden"] + c["layers"] * c["experts"]
    diffs = res["scores"]
    worst = max(r["diff"] for r in diffs.values()) if diffs else float("nan")
    return "\n".join([
        f"{c['name']} at real size: {c['texts']:,} texts handed to the encoder ({c['distinct']:,} distinct), "
        f"MoEE(sum) at {dims} dims (HS {c['hidden']}, RW {c['layers']} x {c['experts']}), features cached in 2 "
        f"shards per feature; medians of {res['repeats']} interleaved repeats.",
        "",
        "| measure | before | after | ratio |",
        "|---|---|---|---|",
        f"| our side of the job: cache reads + fusion + embeddings to mteb | {s['before']:.2f} s | {s['after']:.2f} s "
        f"| **{s['before'] / s['after']:.1f}x** |",
        f"| per text | {u['before']:.1f} µs | **{u['after']:.1f} µs** | (target <= 10 µs) |",
        f"| of which (after, one run): cleaning the texts, finding the distinct ones, hashing and looking them up | | "
        f"{res['after_per_text_python_s']:.2f} s | |",
        f"| embeddings: largest difference / values bit-identical | | {res['max_abs_diff']:.1e} / "
        f"{100 * res['identical_values']:.0f}% | |",
        f"| main scores of {len(diffs)} real-size datasets ({', '.join(diffs)}): largest difference | | "
        f"{worst:.1e} | |",
    ])
