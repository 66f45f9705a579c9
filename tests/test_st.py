"""MoEE as a sentence-transformers model: encode, similarity, save/load, and a real consumer (BERTopic), offline."""

import json
import sys

import numpy as np
import pytest
import torch
from conftest import ROOT

from moee_exp import embed_texts
from moee_exp.features.featurize import model_path
from moee_exp.scoring.fuse import fuse, rw_block
from moee_exp.scoring.spec import MoEESpec

TEXTS = [
    "A cat sits on the mat.",
    "A dog runs far away from home, chasing the red ball down the long street.",
    "x",
    "",
    'He said "stop" and left',
    "Stocks fell sharply after the bank raised rates.",
]


def _cos(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


@pytest.fixture(scope="module")
def tiny_dir():
    from conftest import tiny_model_cfg

    return model_path(tiny_model_cfg("tiny"))


@pytest.mark.parametrize(
    ("kwargs", "similarity"),
    [
        (dict(kind="moee_sum", alpha=0.3, prompt="none"), "dot"),
        (dict(kind="moee_concat", standardize="text", prompt="sentiment"), "cosine"),
        (dict(kind="rw", rw_activation="softmax"), "cosine"),
    ],
)
def test_encode_equals_embed_texts_plus_fuse_and_save_load_round_trips(tiny_lm, tiny_dir, tmp_path, kwargs, similarity):
    from sentence_transformers import SentenceTransformer

    from moee_exp.integrations.st import moee_sentence_transformer

    model = moee_sentence_transformer(tiny_dir, **kwargs)
    assert model.similarity_fn_name == similarity
    # batch_size=4 splits the texts into length-sorted batches unlike embed_texts' own: features are batch-free
    got = model.encode(TEXTS, batch_size=4)
    fuse_kwargs = {k: v for k, v in kwargs.items() if k not in ("kind", "prompt")}
    want = fuse(embed_texts(tiny_lm("tiny"), TEXTS, kwargs.get("prompt", "prompteol")), kwargs["kind"], **fuse_kwargs)
    assert got.shape == want.shape == (len(TEXTS), model.get_embedding_dimension())
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)

    model.save(str(tmp_path / "st"))
    saved = json.loads((tmp_path / "st" / "moee_config.json").read_text())
    assert MoEESpec.from_dict(saved["spec"]) == MoEESpec.create(tiny_dir, **kwargs)  # the spec is what is saved
    loaded = SentenceTransformer(str(tmp_path / "st"), trust_remote_code=True)
    assert loaded.similarity_fn_name == similarity
    np.testing.assert_allclose(loaded.encode(TEXTS), got, atol=1e-6, rtol=0)


def test_similarity_of_moee_sum_is_the_summed_similarity(tiny_lm, tiny_dir):
    """model.similarity = cos(HS) + alpha cos(RW), computed here from the raw features, not from fuse()."""
    from moee_exp.integrations.st import moee_sentence_transformer

    alpha = 0.4
    model = moee_sentence_transformer(tiny_dir, kind="moee_sum", alpha=alpha)
    emb = model.encode(TEXTS)
    feats = embed_texts(tiny_lm("tiny"), TEXTS, "prompteol")
    summed = _cos(feats["hs"], feats["hs"]) + alpha * _cos(rw_block(feats["rw"]), rw_block(feats["rw"]))
    np.testing.assert_allclose(model.similarity(emb, emb).numpy(), summed, atol=1e-5)
    np.testing.assert_allclose(model.similarity_pairwise(emb[:3], emb[3:]).numpy(), np.diag(summed[:3, 3:]), atol=1e-5)
    # the documented constant: with cosine it is the summed similarity / (1 + alpha)
    model.similarity_fn_name = "cosine"
    np.testing.assert_allclose(model.similarity(emb, emb).numpy(), summed / (1 + alpha), atol=1e-5)


def test_bad_settings_are_refused(tiny_lm, tiny_dir):
    from moee_exp.integrations.st import MoEE

    with pytest.raises(ValueError, match="batch-mates"):
        MoEE(tiny_dir, standardize="batch", lm=tiny_lm("tiny"))
    with pytest.raises(ValueError, match="not one of"):
        MoEE(tiny_dir, kind="mean", lm=tiny_lm("tiny"))


def test_bertopic_fits_on_the_demo_texts_with_our_embeddings(tiny_lm, tiny_dir, monkeypatch):
    """A real consumer that takes a SentenceTransformer: BERTopic embeds the docs through it (offline)."""
    if "umap" not in sys.modules:  # BERTopic's optional UMAP, unused here: its import JIT-compiles pynndescent
        monkeypatch.setitem(sys.modules, "umap", None)  # (~20 s on a fresh install); BERTopic then goes without it
    pytest.importorskip("bertopic")
    from bertopic import BERTopic
    from hdbscan import HDBSCAN
    from sklearn.decomposition import PCA

    from moee_exp.integrations.st import moee_sentence_transformer

    data = json.loads((ROOT / "moee_exp/data/demo/clustering.json").read_text())
    docs = [doc for topic_docs in data.values() for doc in topic_docs]
    model = moee_sentence_transformer(tiny_dir, alpha=0.5)
    topic_model = BERTopic(
        embedding_model=model,
        umap_model=PCA(n_components=2, random_state=0),  # BERTopic's documented stand-in for UMAP (no numba JIT)
        hdbscan_model=HDBSCAN(min_cluster_size=3, min_samples=1),
    )
    topics, _ = topic_model.fit_transform(docs)
    assert len(topics) == len(docs) and len(set(topics) - {-1}) >= 1
    # BERTopic's topic vectors are the mean document embedding per topic: they must be ours
    ours = fuse(embed_texts(tiny_lm("tiny"), docs, "prompteol"), "moee_sum", alpha=0.5)
    topics = np.asarray(topics)
    for row, topic in zip(topic_model.topic_embeddings_, sorted(set(topics))):
        np.testing.assert_allclose(row, ours[topics == topic].mean(axis=0), atol=1e-5)
    assert isinstance(model[0].auto_model, torch.nn.Module)
