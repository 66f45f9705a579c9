"""MoEE as an mteb model (real metadata, mteb's loader protocol) and the runner's optional mteb result layout."""

import json

import mteb
import pytest
from conftest import tiny_model_cfg
from jobs import cli, compose

from moee_exp.features.featurize import Featurizer, model_path
from moee_exp.features.prompts import TEMPLATES
from moee_exp.integrations.mteb_model import get_moee_model, moee_model_meta
from moee_exp.scoring.model_meta import PAPER
from moee_exp.scoring.encoder import MoEEEncoder

TINY = tiny_model_cfg("tiny")["tiny"]["config"]


def test_metadata_is_read_from_the_checkpoint(tiny_lm):
    meta = moee_model_meta(model_path(tiny_model_cfg("tiny")), kind="moee_sum", alpha=0.5, name="tiny-olmoe")
    lm = tiny_lm("tiny")
    assert meta.name == "moee/tiny-olmoe-moee_sum-a0.5-prompteol-clean"
    assert meta.revision == "local"
    # counted on the really loaded base model, not on the weightless copy the metadata is read from
    assert meta.n_parameters == sum(p.numel() for p in lm.model.parameters())
    h, inter, layers, experts, k = (TINY[key] for key in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_experts", "num_experts_per_tok"))  # fmt: skip
    vocab = lm.model.get_input_embeddings().num_embeddings
    assert meta.n_embedding_parameters == vocab * h
    routed = layers * experts * 3 * h * inter  # gate, up and down projection of every expert
    assert meta.n_active_parameters == meta.n_parameters - vocab * h - routed * (experts - k) // experts
    assert meta.embed_dim == h + layers * experts
    assert meta.similarity_fn_name == mteb.models.model_meta.ScoringFunction.COSINE
    assert meta.reference == PAPER and "Mixture-of-Experts" in meta.citation
    assert meta.use_instructions  # PromptEOL is a fixed input format
    assert not moee_model_meta(model_path(tiny_model_cfg("tiny")), kind="hs", prompt="none").use_instructions
    assert moee_model_meta(model_path(tiny_model_cfg("tiny")), kind="rw").embed_dim == layers * experts
    with pytest.raises(TypeError, match="unknown argument"):
        moee_model_meta(model_path(tiny_model_cfg("tiny")), alhpa=0.5)


def test_mteb_evaluate_in_a_users_script_equals_the_runners_encoder():
    from mteb.mocks import MOCK_TASK_TEST_GRID_MONOLINGUAL

    tasks = [t for t in MOCK_TASK_TEST_GRID_MONOLINGUAL if t.metadata.type in ("STS", "PairClassification", "Reranking")]
    assert len(tasks) >= 3
    model = get_moee_model(model_path(tiny_model_cfg("tiny")), kind="moee_sum", alpha=0.2, prompt="none")
    assert model.mteb_model_meta.name.endswith("moee_sum-a0.2-none-clean")  # the API keeps protocol=clean
    result = mteb.evaluate(model, tasks, cache=None, co2_tracker=False, show_progress_bar=False)
    assert result.model_name == model.mteb_model_meta.name
    got = {r.task_name: r.get_score() for r in result.task_results}
    # the runner's encoder, built by hand with the same settings
    runner = MoEEEncoder(Featurizer(tiny_model_cfg("tiny"), TEMPLATES["none"], progress=False), "moee_sum", alpha=0.2)
    want = mteb.evaluate(runner, tasks, cache=None, co2_tracker=False, show_progress_bar=False)
    assert got == {r.task_name: r.get_score() for r in want.task_results}
    # mteb's own overrides go through: ModelMeta.load_model(alpha=...) is an experiment of the same model
    other = model.mteb_model_meta.load_model(alpha=1.0)
    assert other.fuse_kwargs["alpha"] == 1.0 and other.mteb_model_meta.experiment_kwargs == {"alpha": 1.0}


def test_runner_writes_mteb_result_layout_that_mteb_loads(tmp_cwd):
    proc = cli(
        "-m", "emb=moee_sum", "weights.alpha=0.2,0.7", "tasks.names=[MoEEDemoSTS,MoEEDemoPairClassification]",
        "logger=none", "progress=false", "mteb_results=mteb-results",
        "protocol.sum_scoring=similarity",  # mteb's result layout holds mteb's scores (paper's sum is scored by us)
        cwd=tmp_cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = {}
    for path in (tmp_cwd / "multirun").glob("**/results/*.json"):
        row = json.loads(path.read_text())
        ours[(row["alpha"], row["task"])] = row["main_score"]
    assert len(ours) == 4
    # mteb's own loader reads the layout back: one model per alpha, real metadata, our scores
    cache = mteb.ResultCache(tmp_cwd / "mteb-results")
    loaded = cache.load_results(tasks=["MoEEDemoSTS", "MoEEDemoPairClassification"])
    theirs = {}
    for model_result in loaded.model_results:
        alpha = float(model_result.model_name.rsplit("-a", 1)[1].split("-")[0])
        for task_result in model_result.task_results:
            theirs[(alpha, task_result.task_name)] = task_result.get_score()
    assert theirs.keys() == ours.keys()
    for key, score in ours.items():
        assert theirs[key] == pytest.approx(score, abs=1e-6)
    (meta_file, *_) = (tmp_cwd / "mteb-results").glob("results/*a0.2*/*/model_meta.json")
    meta = json.loads(meta_file.read_text())
    assert meta["embed_dim"] == TINY["hidden_size"] + TINY["num_hidden_layers"] * TINY["num_experts"]
    assert meta["reference"] == PAPER and meta["n_parameters"] > 0


def test_mteb_results_is_off_by_default():
    assert compose().mteb_results is None
