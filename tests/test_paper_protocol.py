"""protocol=paper equals the public code: prompted strings, embeddings (per encode call) and per-dataset main scores
against the public code's own outputs on tiny checkpoints (tests/fixtures/public_code/, devtools/public_fixture.py).
The differences that remain, and why, are in BENCHMARKS.md ("Paper protocol vs the public code")."""

import os

import numpy as np
import pytest

from devtools import public_fixture as pf

pytestmark = pytest.mark.skipif(not pf.available(), reason="tests/fixtures/public_code/ not present")

# Task types whose main score our protocol=paper cannot reproduce to 1e-4, with the reason (BENCHMARKS.md):
# (task type, emb) -> reason; emb "*" = every emb of the type. Every other row must match to 1e-4.
_ORDER = ("the public code encodes other lists (or the same texts in another order) than mteb 2.x hands our encoder, "
          "so its batches of 16, and with them the per-batch z-scores, differ; HS (never z-scored) matches")
KNOWN = {
    ("Clustering", "*"): "MiniBatchKMeans labels differ between scikit-learn 1.5.2 (the public code's env) and 1.9.1 "
                         "for the same data and seed (measured with the fork's own evaluator under both)",
    ("Classification", "RW"): _ORDER,
    ("Classification", "MoEE"): _ORDER,
    ("PairClassification", "RW"): _ORDER + " (the fork: list(set(sentences)), ordered by PYTHONHASHSEED)",
    ("PairClassification", "MoEE"): _ORDER + " (the fork: list(set(sentences)), ordered by PYTHONHASHSEED)",
    ("PairClassification", "sum w=1.0"): "the fork's list(set(sentences)) order depends on PYTHONHASHSEED; "
                                         "paper_scoring encodes the unique sentences in first-appearance order",
    ("PairClassification", "sum w=0.5"): "as for w=1.0",
}
TOL = 1e-4


def _batch_size() -> int:
    return int(pf.scores()[0]["batch_size"])


def _families():
    return sorted({r["family"] for r in pf.scores()}) if pf.available() else []


def _emb(row) -> str:
    return f"sum w={row['similarity_weight']}" if row["similarity_ensemble"] else row["emb_info"]


@pytest.mark.parametrize("family", _families())
def test_prompted_strings_and_embeddings_equal_the_public_codes(family):
    keys = [k for k in pf.embeddings() if k.startswith(f"{family}/")]
    assert keys
    n_prompted = 0
    for key in keys:
        ours, prompted = pf.our_embedding(key, _batch_size())
        if pf.public_prompted(key) is not None:
            n_prompted += 1
            assert prompted == pf.public_prompted(key), key
        theirs = pf.embeddings()[key]
        assert ours.shape == theirs.shape, key
        np.testing.assert_allclose(ours, theirs, rtol=1e-3, atol=1e-3, err_msg=key)
    assert n_prompted


@pytest.mark.parametrize("family", _families())
def test_main_scores_equal_the_public_codes(family, tmp_path):
    rows = [r for r in pf.scores() if r["family"] == family]
    # the session's cache dir: the features test_prompted_strings... extracted are read, not extracted again
    compared = pf.run_ours(rows, tmp_path, cache_dir=os.environ["MOEE_CACHE_DIR"])
    assert len(compared) == len(rows)
    bad = []
    for row in compared:
        known = KNOWN.get((row["task_type"], _emb(row))) or KNOWN.get((row["task_type"], "*"))
        if known is None and abs(row["ours"] - row["public"]) > TOL:
            bad.append(f"{row['embed_method']} {_emb(row)} {row['task']}: ours {row['ours']:.6f} "
                       f"public {row['public']:.6f}")  # fmt: skip
    assert not bad, "\n".join(bad)
    # the comparison is not vacuous: most rows are held to 1e-4, HS everywhere but Clustering
    held = [r for r in compared if (r["task_type"], "*") not in KNOWN and (r["task_type"], _emb(r)) not in KNOWN]
    assert len(held) >= len(compared) // 2
    assert {r["task_type"] for r in held if _emb(r) == "HS"} == {"STS", "Classification", "PairClassification",
                                                               "Reranking", "Summarization"}
