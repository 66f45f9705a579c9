"""protocol=paper's MoEE(sum) scoring on the task kinds the public code never saw: mteb 2's Clustering (one document
per row, hierarchical labels), Retrieval, and a Reranking task without top_ranked; and the generated data they need."""

import numpy as np
import pytest

from moee_exp.scoring import paper_scoring as ps
from moee_exp.scoring.synthetic_tasks import generate, plan, synthetic_task
from moee_exp.scoring.tasks import get_tasks


def _v2(name):
    (task,) = get_tasks([name], "synthetic")  # (as MTEB(eng, v2) has them: one subset, test split)
    return task


def _vectors(texts, dim, salt):
    """A fixed vector per text (so a text has one embedding whatever call it is in)."""
    out = []
    for t in texts:
        rng = np.random.default_rng([salt, *t.encode()[:64], len(t)])
        out.append(rng.normal(size=dim))
    return np.array(out, np.float32).reshape(len(texts), dim)


def fake_encode(calls=None):
    def encode(texts, *, task_metadata, prompt_type=None):
        if calls is not None:
            calls.append((len(texts), prompt_type))
        return _vectors(texts, 16, 1), _vectors(texts, 12, 2)

    return encode


@pytest.mark.parametrize("name", ["MedrxivClusteringS2S.v2", "ArXivHierarchicalClusteringS2S"])
def test_mteb2_clustering_is_scored_on_its_documents_with_its_own_sample_and_levels(name):
    task = _v2(name)
    calls = []
    main, (scores,) = ps.evaluate_paper_sum(task, fake_encode(calls), 1.0)
    shape = plan(task)["default"]["test"]
    assert calls == [(shape["texts"], None)] and shape["texts"] >= 24  # the task's 4% of the documents, one call
    levels = 2 if "Hierarchical" in name else 1
    assert sorted(scores["v_measures"]) == [f"Level {i}" for i in range(levels)]
    assert all(len(v) == task.n_clusters for v in scores["v_measures"].values())
    assert main == scores["v_measure"] and 0 <= main <= 1 and np.isfinite(scores["ami"])


def test_mteb2_clustering_with_alpha_0_is_mtebs_own_clustering_of_hs():
    """alpha = 0 averages nothing in: the cluster ids are HS's, and the score is mteb 2's evaluator's on HS (same
    documents sampled, same bootstrap draws, same k-means)."""
    import mteb
    from mteb.models.abs_encoder import AbsEncoder
    from mteb.models.model_meta import ModelMeta

    class HS(AbsEncoder):
        mteb_model_meta = ModelMeta.create_empty({"name": "test/hs", "revision": "1"})

        def encode(self, inputs, *, task_metadata, hf_split, hf_subset, prompt_type=None, **kw):
            return _vectors([t for b in inputs for t in b["text"]], 16, 1)

    ours, _ = ps.evaluate_paper_sum(_v2("ArXivHierarchicalClusteringS2S"), fake_encode(), 0.0)
    (result,) = mteb.evaluate(HS(), _v2("ArXivHierarchicalClusteringS2S"), cache=None, co2_tracker=False,
                              show_progress_bar=False).task_results
    assert ours == pytest.approx(result.get_score(), abs=1e-12)


def test_retrieval_ranks_by_the_summed_similarity_and_gets_mtebs_metrics():
    task = synthetic_task("ArguAna")
    calls = []
    main, (scores,) = ps.evaluate_paper_sum(task, fake_encode(calls), 0.5)
    assert [p for _, p in calls] == ["query", "document"]
    assert scores["scoring"] == "summed_similarity" and main == scores["ndcg_at_10"]
    assert {"map_at_1000", "recall_at_10", "mrr_at_10", "ndcg_at_1"} <= set(scores)

    # the ranking: cos_HS + 0.5 cos_RW of each query against the whole corpus, best first
    data = task.dataset["default"]["test"]
    q_text = dict(zip(data["queries"]["id"], data["queries"]["text"]))
    docs = list(data["corpus"]["id"])
    d_text = [t for t in data["corpus"]["text"]]
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    blocks = [unit(_vectors(d_text, 16, 1)), unit(_vectors(d_text, 12, 2))]
    qid = next(iter(q_text))
    q = [unit(_vectors([q_text[qid]], 16, 1)), unit(_vectors([q_text[qid]], 12, 2))]
    summed = (blocks[0] @ q[0].T + 0.5 * blocks[1] @ q[1].T)[:, 0]
    ranking = ps.summed_similarity_ranking(
        ps.make_blocks(_vectors([q_text[qid]], 16, 1), _vectors([q_text[qid]], 12, 2)),
        ps.make_blocks(_vectors(d_text, 16, 1), _vectors(d_text, 12, 2)), [qid], docs, 0.5, top_k=3)
    best = [docs[i] for i in np.argsort(-summed)[:3]]
    assert list(ranking[qid]) == best and list(ranking[qid].values()) == pytest.approx(sorted(summed)[::-1][:3],
                                                                                          abs=1e-5)


def test_perfect_blocks_give_a_perfect_retrieval_score():
    """A query and its relevant documents sharing one vector, every other document far: ndcg@10 = 1."""
    task = synthetic_task("SCIDOCS")
    task.load_data()
    data = task.dataset["default"]["test"]
    rel = data["relevant_docs"]
    owner = {d: q for q, r in rel.items() for d, s in r.items() if s > 0}
    text_owner = {t: owner.get(i) for i, t in zip(data["corpus"]["id"], data["corpus"]["text"])}
    text_owner.update({t: q for q, t in zip(data["queries"]["id"], data["queries"]["text"])})
    qids = sorted(rel)

    def encode(texts, *, task_metadata, prompt_type=None):
        out = np.full((len(texts), len(qids) + 1), 0.01, np.float32)
        for i, t in enumerate(texts):
            o = text_owner.get(t)
            out[i, qids.index(o) if o in qids else len(qids)] = 1.0
        return out, out

    main, _ = ps.evaluate_paper_sum(task, encode, 1.0)
    assert main == pytest.approx(1.0)


def test_a_reranking_task_without_top_ranked_ranks_its_whole_corpus():
    task = synthetic_task("AskUbuntuDupQuestions")
    task.load_data()
    split = task.dataset["default"]["test"]
    with_top, _ = ps.evaluate_paper_sum(task, fake_encode(), 1.0)
    split["top_ranked"] = None  # mteb 2: a reranking set may come without candidates; then the corpus is searched
    calls = []
    without, (scores,) = ps.evaluate_paper_sum(task, fake_encode(calls), 1.0)
    assert calls[1][0] == len(split["corpus"]) and 0 < without <= 1 and np.isfinite(scores["mrr"])
    assert without != with_top  # more candidates per query: another ranking


def test_generated_data_is_enough_for_every_kind():
    # a reranking task always gets candidates, even without statistics (the bundled demo task)
    demo = get_tasks(["MoEEDemoReranking"], "synthetic")[0]
    demo.load_data()
    split = demo.dataset["default"]["test"]
    assert split["top_ranked"] and all(len(v) > 1 for v in split["top_ranked"].values())
    # a document-per-row clustering task: its 4% sample holds 24 documents; hierarchical labels come as levels
    for name in ("ArXivHierarchicalClusteringS2S", "BiorxivClusteringP2P.v2"):
        task = _v2(name)
        shape = plan(task)["default"]["test"]
        assert int(task.max_fraction_of_documents_to_embed * shape["n"]) == shape["texts"] == 24
        labels = generate(task)["test"][task.label_column_name]
        if "Hierarchical" in name:
            assert all(isinstance(y, list) and len(y) == 2 and y[1].startswith(y[0]) for y in labels)
            assert len({y[0] for y in labels}) > 1 and len({y[1] for y in labels}) > len({y[0] for y in labels})
        else:
            assert len(set(labels)) > 1
        assert task.max_documents_per_cluster == 24  # each bootstrap draw: as many as are embedded (small)


def test_extract_of_no_text_is_zero_rows_of_each_feature():
    from conftest import tiny_model_cfg

    from moee_exp.features.extract import extract
    from moee_exp.features.featurize import get_model

    lm = get_model(tiny_model_cfg())
    feats = extract(lm, [], features=("hs", "rw", "hs_mean_tokens"), progress=False)
    one = extract(lm, ["a text"], features=("hs", "rw", "hs_mean_tokens"), progress=False)
    assert {k: v.shape[1:] for k, v in feats.items()} == {k: v.shape[1:] for k, v in one.items()}
    assert all(len(v) == 0 and v.dtype == np.float32 for v in feats.values())
