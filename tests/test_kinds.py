"""Embedding kinds are registered objects: a throwaway kind, registered here and nowhere else, reaches the config
checks, a job, the embed CLI, the sentence-transformers module, the mteb metadata, the dashboard and the report."""

import numpy as np
import pytest
from conftest import tiny_model_cfg
from jobs import cli, compose

from moee_exp.features.featurize import model_path
from moee_exp.scoring import kinds
from moee_exp.scoring.fuse import EmbConfig, fuse

# RW alone, each text's vector scaled to norm 1: a kind none of the stages has heard of (its protocol=paper
# standardization, text, is neither the default none nor the paper kinds' batch: the resolver must read it)
UNIT_RW = kinds.EmbKind("unit_rw", "RW_unit", blocks=("rw",), unit_blocks=True, standardize="none",
                        paper_standardize="text")


@pytest.fixture
def unit_rw():
    kinds.register(UNIT_RW)
    yield UNIT_RW
    kinds.unregister(UNIT_RW.name)


def test_the_paper_kinds_are_registered_with_their_facts():
    assert kinds.names()[:4] == ("hs", "rw", "moee_concat", "moee_sum")
    s = kinds.get("moee_sum")
    assert s.weighted and s.unit_blocks and s.similarity == "dot" and s.dim(8, 6) == 14
    assert kinds.get("hs").dim(8, 6) == 8 and kinds.get("rw").dim(8, 6) == 6
    assert kinds.get("moee_concat").standardize == "text" and kinds.get("hs").paper_standardize == "none"
    with pytest.raises(ValueError, match="not one of: hs, rw"):
        kinds.get("mean")
    with pytest.raises(ValueError, match="blocks"):
        kinds.EmbKind("bad", "Bad", blocks=("attention",))


def test_a_new_kind_fuses_checks_and_runs_a_job_without_touching_any_stage(unit_rw, tmp_path):
    rng = np.random.default_rng(0)
    feats = {"hs": rng.normal(size=(5, 8)).astype(np.float32), "rw": rng.normal(size=(5, 2, 3)).astype(np.float32)}
    emb = fuse(feats, "unit_rw")
    rw = feats["rw"].reshape(5, -1).astype(np.float64)
    np.testing.assert_allclose(emb, rw / np.linalg.norm(rw, axis=1, keepdims=True), rtol=1e-6)
    assert EmbConfig(kind="unit_rw").kind == "unit_rw"
    # the job: its config check, its name and the rows it writes
    proc = cli("emb.kind=unit_rw", "tasks.names=[MoEEDemoSTS]", "logger=none", f"hydra.run.dir={tmp_path / 'job'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "tiny-olmoe-unit_rw-prompteol-paper" in proc.stdout
    import pandas as pd

    rows = pd.read_csv(tmp_path / "job" / "results.csv")
    assert set(rows.emb) == {"unit_rw"} and rows.main_score.notna().all()
    # once unregistered, it is an unknown kind again: one line naming the registered ones
    kinds.unregister("unit_rw")
    proc = cli("emb.kind=unit_rw", "tasks.names=[MoEEDemoSTS]", "logger=none", f"hydra.run.dir={tmp_path / 'gone'}", cwd=tmp_path)
    assert proc.returncode == 2 and "emb.kind='unit_rw' is not one of: hs, rw, moee_concat, moee_sum" in proc.stderr


def test_a_new_kind_reaches_the_cli_st_mteb_dashboard_and_report(unit_rw, tiny_lm, tmp_path):
    from moee_exp.integrations.dashboard import build_report, report_spec
    from moee_exp.integrations.embed import parse_args
    from moee_exp.integrations.mteb_model import moee_model_meta
    from moee_exp.integrations.st import MoEE

    assert parse_args(["--model", "tiny", "--input", "x", "--output", "y.npz", "--emb", "unit_rw"]).emb == "unit_rw"
    lm = tiny_lm("tiny")
    module = MoEE("tiny", kind="unit_rw", lm=lm)
    rw = len(lm.routers) * lm.n_experts
    assert module.get_embedding_dimension() == rw and module.similarity_fn_name() == "cosine"
    assert moee_model_meta(model_path(tiny_model_cfg("tiny")), kind="unit_rw").embed_dim == rw
    assert "RW_unit" in str(report_spec(build_report("someone", "moee", [("olmoe", "none")], bind=False)))
    # the report's method label comes from the kind
    from analysis import collect

    row = {"task": "STS12", "emb": "unit_rw", "main_score": 0.5, "model": "m", "prompt": "none", "protocol": "clean"}
    assert collect.tidy([row])[0].method.tolist() == ["RW_unit"]
    # and protocol=paper's standardization of the kind is its own
    assert compose("emb.kind=unit_rw").emb.standardize == "text"
    assert compose("emb.kind=unit_rw", "protocol=clean").emb.standardize == "none"
