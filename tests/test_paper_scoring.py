"""moee_exp.scoring.paper_scoring: the public code's MoEE(sum) scoring, checked against its own evaluators and by hand."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.cluster import MiniBatchKMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, v_measure_score

from moee_exp.scoring import paper_scoring as ps
from moee_exp.scoring.demo_tasks import get_demo_tasks

FORK = json.loads((Path(__file__).parent / "fixtures/paper_scoring/fork_demo_scores.json").read_text())
FORK_NAME = {"MoEEDemoSTS": "sts", "MoEEDemoPairClassification": "pair", "MoEEDemoClustering": "clustering",
             "MoEEDemoReranking": "reranking", "MoEEDemoSummarization": "summarization",
             "MoEEDemoClassification": "classification"}


def _feat(text: str, d: int, salt: str) -> np.ndarray:
    # the fixture's stand-in model (see fixtures/paper_scoring/README.md)
    return np.random.RandomState(int(hashlib.md5((salt + text).encode()).hexdigest()[:8], 16)).randn(d).astype(np.float32)


class Recorder:
    """encode(): the fixture's blocks; remembers every call (texts, prompt_type)."""

    def __init__(self):
        self.calls = []

    def __call__(self, texts, *, task_metadata, prompt_type):
        self.calls.append((list(texts), prompt_type))
        return np.stack([_feat(t, 24, "h") for t in texts]), np.stack([_feat(t, 12, "r") for t in texts])


def _as_fork_ran(task):
    """The demo task set up as the fixture's fork run: EmotionClassification's 16 per label, SummEval's evaluator."""
    from mteb._evaluators.text.summarization_evaluator import (
        DeprecatedSummarizationEvaluator,
    )

    task.samples_per_label = 16
    if task.metadata.type == "Summarization":
        task.evaluator = DeprecatedSummarizationEvaluator
    return task


@pytest.mark.parametrize("w", ["0.5", "1.0"])
def test_every_field_equals_the_public_codes_evaluators_on_the_demo_tasks(w):
    for task in map(_as_fork_ran, get_demo_tasks()):
        main, (scores,) = ps.evaluate_paper_sum(task, Recorder(), float(w))
        fork = FORK[w][FORK_NAME[task.metadata.name]]
        numeric = {k: v for k, v in fork.items() if isinstance(v, float | int)}
        assert numeric, task.metadata.name
        for key, value in numeric.items():
            assert scores[key] == pytest.approx(value, abs=1e-6), (task.metadata.name, key)
        assert main == scores["main_score"]
        if "scores_per_experiment" in fork:  # each of the 10 undersampled experiments, not just their mean
            assert [s["accuracy"] for s in scores["scores_per_experiment"]] == pytest.approx(
                [s["accuracy"] for s in fork["scores_per_experiment"]], abs=1e-9)


def test_main_scores_named_as_the_fork_reports_them():
    assert FORK["1.0"]["pair"]["max_ap"] == pytest.approx(
        ps.evaluate_paper_sum(get_demo_tasks(["MoEEDemoPairClassification"])[0], Recorder(), 1.0)[0])


def _blocks(rng, n, d_hs=6, d_rw=4):
    return ps.make_blocks(rng.randn(n, d_hs).astype(np.float32), rng.randn(n, d_rw).astype(np.float32))


def _paired_cos(a, b):
    a = a.astype(np.float64); b = b.astype(np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_sts_main_is_the_spearman_of_the_summed_cosines_and_spearman_field_the_sum_of_two():
    rng = np.random.RandomState(0)
    b1, b2, gold = _blocks(rng, 30), _blocks(rng, 30), rng.rand(30)
    cos_hs, cos_rw = _paired_cos(b1.hs, b2.hs), _paired_cos(b1.rw, b2.rw)
    out = ps.sts_scores(b1, b2, gold, 0.7)
    assert out["cosine_spearman"] == pytest.approx(spearmanr(gold, cos_hs + 0.7 * cos_rw)[0], abs=1e-9)
    assert out["spearman"] == pytest.approx(spearmanr(gold, cos_hs)[0] + 0.7 * spearmanr(gold, cos_rw)[0], abs=1e-9)
    concat = _paired_cos(np.hstack([b1.hs, b1.rw]), np.hstack([b2.hs, b2.rw]))
    assert out["cosine_pearson"] == pytest.approx(pearsonr(gold, concat)[0], abs=1e-6)
    assert ps.sts_scores(b1, b2, gold, 0.0)["cosine_spearman"] == pytest.approx(spearmanr(gold, cos_hs)[0], abs=1e-9)


def test_label_averaging_worked_by_hand():
    y_hs, y_rw = np.array([0, 2, 1, 2]), np.array([2, 0, 1, 1])
    assert ps.averaged_labels(y_hs, y_rw, 1.0).tolist() == [1, 1, 1, 1]  # (0+2)/2, (2+0)/2, 1, 1.5 -> 1
    assert ps.averaged_labels(y_hs, y_rw, 0.5).tolist() == [0, 1, 1, 1]  # 0.67, 1.33, 1, 1.67 truncated
    assert ps.averaged_labels(y_hs, y_rw, 0.0).tolist() == y_hs.tolist()
    assert ps.averaged_labels(y_hs, y_rw, 3.0).tolist() == [1, 0, 1, 1]  # 6/4, 2/4, 1, 5/4


def test_classification_with_w0_is_the_hs_classifier_alone():
    rng = np.random.RandomState(1)
    train, test = _blocks(rng, 40), _blocks(rng, 25)
    y_train, y_test = rng.randint(0, 3, 40), rng.randint(0, 3, 25)
    hs_only = LogisticRegression(random_state=42, max_iter=100).fit(train.hs, y_train).predict(test.hs)
    assert ps.classification_experiment(train, y_train, test, y_test, 0.0)["accuracy"] == pytest.approx(
        np.mean(hs_only == y_test))
    rw_only = LogisticRegression(random_state=42, max_iter=100).fit(train.rw, y_train).predict(test.rw)
    averaged = np.trunc((hs_only + rw_only * 2.0) / 3.0)
    assert ps.classification_experiment(train, y_train, test, y_test, 2.0)["accuracy"] == pytest.approx(
        np.mean(averaged == y_test))


def test_undersampling_draws_per_label_from_one_index_array_shuffled_again_each_experiment():
    labels = [0, 1] * 10
    draws = ps.undersample(labels, 3, 4)
    assert [sorted(labels[i] for i in d) for d in draws] == [[0, 0, 0, 1, 1, 1]] * 4
    idxs = np.arange(20)
    for d in draws:  # the same array permuted again (not a fresh arange) under a freshly seeded RNG
        np.random.RandomState(42).shuffle(idxs)
        assert d == _first_per_label(idxs, labels, 3)
    assert draws[0] != draws[1]


def _first_per_label(idxs, labels, k):
    seen, out = {}, []
    for i in idxs:
        if seen.get(labels[i], 0) < k:
            out.append(int(i)); seen[labels[i]] = seen.get(labels[i], 0) + 1
    return out


def test_string_labels_are_coded_in_sorted_order_and_integers_kept():
    assert ps.label_codes(["neg", "pos"], ["neutral"]) == {"neg": 0, "neutral": 1, "pos": 2}
    assert ps.label_codes([3, 1], [7]) == {1: 1, 3: 3, 7: 7}


def test_clustering_w0_is_hs_kmeans_and_averaged_ids_are_the_clusters():
    rng = np.random.RandomState(2)
    blocks, labels = _blocks(rng, 60), rng.randint(0, 4, 60)
    hs_ids = MiniBatchKMeans(n_clusters=4, batch_size=500, n_init="auto", random_state=np.random.RandomState(42)).fit(
        blocks.hs).labels_
    assert ps.clustering_v_measure(blocks, labels, 0.0) == pytest.approx(v_measure_score(labels, hs_ids))
    ids = ps.cluster_ids(blocks, 4, 1.0)
    rs = np.random.RandomState(42)  # one stream: the RW fit draws after the HS fit
    ids_hs = MiniBatchKMeans(n_clusters=4, batch_size=500, n_init="auto", random_state=rs).fit(blocks.hs).labels_
    ids_rw = MiniBatchKMeans(n_clusters=4, batch_size=500, n_init="auto", random_state=rs).fit(blocks.rw).labels_
    assert np.array_equal(ids, (ids_hs + ids_rw) / 2)  # so (0, 2) and (1, 1) are one cluster for v_measure
    assert ps.clustering_v_measure(blocks, labels, 1.0) == pytest.approx(v_measure_score(labels, ids))


def test_pair_classification_counts_a_cut_between_tied_scores_as_the_fork_does():
    out = ps._threshold_metrics(np.array([0.9, 0.9, 0.1]), np.array([1, 0, 0]), True)
    # sorted (stable): (0.9,1) (0.9,0) (0.1,0); cut after row 0 is between the tied 0.9s: 1 + 2 negatives right
    assert out["accuracy"] == 1.0 and out["accuracy_threshold"] == pytest.approx(0.9)
    assert out["f1"] == 1.0 and out["f1_threshold"] == pytest.approx(0.9)
    dist = ps._threshold_metrics(np.array([0.2, 3.0, 0.5, 4.0]), np.array([1, 0, 1, 0]), False)
    assert dist["accuracy"] == 1.0 and dist["accuracy_threshold"] == pytest.approx(1.75)
    assert dist["ap"] == 1.0


def test_pair_classification_sums_each_metric_of_the_two_blocks():
    rng = np.random.RandomState(3)
    b1, b2, labels = _blocks(rng, 20), _blocks(rng, 20), rng.randint(0, 2, 20)
    manhattan = np.abs(b1.hs - b2.hs).sum(1) + 0.5 * np.abs(b1.rw - b2.rw).sum(1)
    out = ps.pair_classification_scores(b1, b2, labels, 0.5)
    assert out["manhattan_ap"] == pytest.approx(average_precision_score(labels, -manhattan))
    summed = _paired_cos(b1.hs, b2.hs) + 0.5 * _paired_cos(b1.rw, b2.rw)
    assert out["cosine_ap"] == pytest.approx(average_precision_score(labels, summed))
    assert out["max_ap"] == max(out[f"{k}_ap"] for k in ("similarity", "cosine", "manhattan", "euclidean", "dot"))


def test_reranking_map_is_the_mean_ap_of_the_summed_cosines():
    rng = np.random.RandomState(4)
    queries, docs = _blocks(rng, 3), _blocks(rng, 12)
    samples = [(0, [0, 1, 2, 3], 1), (1, [4, 5, 6, 7, 8], 2), (2, [9, 10, 11], 1)]
    for w in (0.0, 0.8):
        aps = [average_precision_score([1] * p + [0] * (len(c) - p),
                                       _paired_cos(np.repeat(queries.hs[[q]], len(c), 0), docs.hs[c])
                                       + w * _paired_cos(np.repeat(queries.rw[[q]], len(c), 0), docs.rw[c]))
               for q, c, p in samples]
        assert ps.reranking_scores(queries, docs, samples, w)["map"] == pytest.approx(np.mean(aps))


def test_summarization_deprecated_mode_averages_statistic_and_p_value():
    rng = np.random.RandomState(5)
    human, machine = [_blocks(rng, 2)], [_blocks(rng, 5)]
    gold = [[0.1, 0.4, 0.2, 0.9, 0.6]]
    cos = np.array([max(_paired_cos(machine[0].hs[[j, j]], human[0].hs) + 0.3 * _paired_cos(machine[0].rw[[j, j]],
                                                                                          human[0].rw))
                    for j in range(5)])
    rho, p = spearmanr(gold[0], cos)
    assert ps.summarization_scores(human, machine, gold, 0.3)["cosine_spearman"] == pytest.approx(rho, abs=1e-6)
    assert ps.summarization_scores(human, machine, gold, 0.3, deprecated=True)["cosine_spearman"] == pytest.approx(
        (rho + p) / 2, abs=1e-6)


def test_encode_calls_follow_the_forks_lists():
    rec = Recorder()
    task = get_demo_tasks(["MoEEDemoReranking"])[0]
    ps.evaluate_paper_sum(task, rec, 1.0)
    assert [str(c[1]) for c in rec.calls] == ["query", "document"]
    rows = json.loads((Path(ps.__file__).parents[1] / "data/demo/reranking.json").read_text())
    assert rec.calls[0][0] == [r["query"] for r in rows]
    assert rec.calls[1][0] == list(dict.fromkeys(t for r in rows for t in r["positive"] + r["negative"]))
    rec = Recorder()
    ps.evaluate_paper_sum(_as_fork_ran(get_demo_tasks(["MoEEDemoClassification"])[0]), rec, 1.0)
    assert len(rec.calls) == 1 + 10 and all(c[1] is None for c in rec.calls)  # test once, then each experiment's draw


def test_bad_input_is_one_clear_error():
    task = get_demo_tasks(["MoEEDemoSTS"])[0]
    with pytest.raises(ValueError, match="alpha"):
        ps.evaluate_paper_sum(task, Recorder(), -1.0)
    with pytest.raises(ValueError, match="emb_info"):
        ps.evaluate_paper_sum(task, Recorder(), 1.0, emb_info="concat")
    with pytest.raises(ValueError, match="two \\(n, d\\) arrays"):
        ps.evaluate_paper_sum(task, lambda texts, **kw: (np.zeros((len(texts), 3)), np.zeros((1, 2))), 1.0)
    task.metadata = task.metadata.model_copy(update={"type": "BitextMining"})  # a type it has no scoring for
    with pytest.raises(ValueError, match="covers"):
        ps.evaluate_paper_sum(task, Recorder(), 1.0)


def test_pair_classification_reads_mteb_1x_one_row_layout_like_the_row_layout():
    from datasets import Dataset, DatasetDict

    task = get_demo_tasks(["MoEEDemoPairClassification"])[0]
    rows_main, _ = ps.evaluate_paper_sum(task, Recorder(), 1.0)
    test = task.dataset["test"]
    task.dataset = DatasetDict({"test": Dataset.from_dict({k: [list(test[k])] for k in test.column_names})})
    assert len(task.dataset["test"]) == 1
    assert ps.evaluate_paper_sum(task, Recorder(), 1.0)[0] == rows_main


def test_encoder_blocks_gives_the_encoders_hs_and_rw_from_one_extraction_per_call():
    from moee_exp.scoring.encoder import MoEEEncoder
    from moee_exp.scoring.fuse import fuse

    seen = []

    def featurizer(texts, desc=None):
        seen.append(list(texts))
        return {"hs": np.stack([_feat(t, 24, "h") for t in texts]),
                "rw": np.stack([_feat(t, 12, "r") for t in texts]).reshape(len(texts), 3, 4)}

    encoder = MoEEEncoder(featurizer, "moee_sum", alpha=0.5, standardize="batch", standardize_batch_size=16)
    task = get_demo_tasks(["MoEEDemoSTS"])[0]
    hs, rw = ps.encoder_blocks(encoder)(["a b", "c d", "e f"], task_metadata=task.metadata, prompt_type=None)
    assert seen == [["a b", "c d", "e f"]]
    feats = featurizer(["a b", "c d", "e f"])
    assert np.allclose(hs, fuse(feats, "hs", standardize="batch", standardize_batch_size=16))
    assert np.allclose(rw, fuse(feats, "rw", standardize="batch", standardize_batch_size=16))
    assert encoder.kind == "moee_sum" and encoder.model is featurizer  # the caller's encoder is left as it was
    main, _ = ps.evaluate_paper_sum(task, ps.encoder_blocks(encoder), 0.5)
    assert len(seen) == 2 + 2  # then STS: sentence1 and sentence2, each extracted once
    assert np.isfinite(main)
