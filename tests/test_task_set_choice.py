"""The task set follows the model (tiny -> demo, hub/local -> paper, explicit tasks=... wins), the job says which
and why, and a model that cannot be reached stops a sweep once, before its jobs, with the single job's error."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, tiny_model_cfg
from jobs import cli, error_lines
from jobs import compose
from omegaconf import OmegaConf

PAPER = yaml.safe_load((ROOT / "conf/tasks/paper.yaml").read_text())["names"]
DEMO = yaml.safe_load((ROOT / "conf/tasks/demo.yaml").read_text())["names"]
HUB_MODELS = ["olmoe", "qwen_moe", "deepseek_moe"]
TINY_MODELS = sorted(p.stem for p in (ROOT / "conf/model").glob("tiny*.yaml"))


@pytest.mark.parametrize("model", HUB_MODELS + TINY_MODELS)
def test_the_task_set_follows_the_model(model):
    cfg = compose(f"model={model}")
    assert (cfg.tasks.name, list(cfg.tasks.names)) == (("paper", PAPER) if model in HUB_MODELS else ("demo", DEMO))


def test_a_local_model_dir_keeps_paper_and_an_explicit_task_set_always_wins():
    assert compose("model=olmoe", "model.name_or_path=./my/checkpoint").tasks.name == "paper"
    assert compose().tasks.name == "demo"  # python run.py: the offline smoke run
    for model in ("olmoe", "tiny"):
        assert compose(f"model={model}", "tasks=sts").tasks.name == "sts"
        assert list(compose(f"model={model}", "tasks.names=[STS12]").tasks.names) == ["STS12"]
    assert compose("+experiment=prompts", "model=olmoe").tasks.names == ["STS12"]  # the experiment's set
    assert compose("+experiment=paper_main", "model=tiny").tasks.name == "paper"
    assert compose("+experiment=paper_main", "model=olmoe", "tasks=demo").tasks.name == "demo"


def test_cfg_job_shows_the_choice_and_the_job_log_says_why(tmp_cwd):
    proc = cli("model=olmoe", "--cfg", "job", "-p", "tasks", cwd=tmp_cwd)
    assert proc.returncode == 0, proc.stderr
    shown = yaml.safe_load(proc.stdout)
    assert shown["name"] == "paper" and shown["names"] == PAPER
    # and conftest's HF_HOME is empty: the model cannot be reached, the job stops early
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}
    for args, said in [(("model=olmoe",), "tasks=paper: 19 dataset(s), real data (the default for model=olmoe"),
                       (("model=olmoe", "tasks=sts"), "tasks=sts: 8 dataset(s), real data (set on the command line"),
                       (("model=olmoe", "tasks.data=synthetic"), "tasks=paper: 19 dataset(s), synthetic data")]:
        proc = cli(*args, "logger=none", cwd=tmp_cwd, env=offline)
        lines = [line for line in proc.stdout.splitlines() if "[moee][INFO]" in line]
        assert lines and said in lines[0], proc.stdout + proc.stderr


def _error_lines(proc) -> list[str]:
    return error_lines(proc) + [line for line in proc.stdout.splitlines() if line.startswith("error:")]


def test_a_sweep_whose_model_cannot_be_reached_stops_once_with_the_single_job_error(tmp_cwd):
    offline = {**os.environ, "HF_HUB_OFFLINE": "1"}  # no hub, and conftest's HF_HOME is an empty HF cache
    single = cli("model=olmoe", "tasks.data=synthetic", "logger=none", cwd=tmp_cwd, env=offline)
    sweep = cli("-m", "model=olmoe", "tasks.data=synthetic", "emb=hs,rw", "logger=none",
                f"hydra.sweep.dir={tmp_cwd / 'sweep'}", cwd=tmp_cwd, env=offline)
    assert single.returncode == sweep.returncode == 2
    (line,) = _error_lines(single)
    assert _error_lines(sweep) == [line]  # once, not once per job
    assert "allenai/OLMoE-1B-7B-0924" in line and "hf download" in line and "Traceback" not in sweep.stderr
    assert not (tmp_cwd / "sweep").exists()  # no job was launched
    assert not list(tmp_cwd.glob("outputs/**/results/*.json"))


def _check(*configs) -> list[str]:
    """moee_exp.jobs.preflight.check_reachable on each config: "reachable" or the exception's type name, per config."""
    from moee_exp.jobs.preflight import check_reachable

    said = []
    for cfg in configs:
        try:
            cfg = OmegaConf.create(cfg)
            check_reachable(cfg.model, cfg.cache)
            said.append("reachable")
        except Exception as err:  # noqa: BLE001 its type is the answer
            said.append(type(err).__name__)
    return said


def test_a_hub_id_in_the_hf_cache_passes_offline_and_one_not_in_it_does_not(tmp_path):
    # An HF hub cache entry as huggingface_hub lays it out, holding the tiny model's config under a hub id, in the
    # test run's HF cache (conftest's HF_HOME, offline; huggingface_hub reads its location at import). The id is
    # this test's own, and the entry is removed after, so every other test still sees an empty cache.
    from moee_exp.features.featurize import model_path

    repo_id = f"moee-test/tiny-olmoe-{uuid.uuid4().hex[:12]}"
    repo = Path(os.environ["HF_HOME"]) / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    try:
        (repo / "snapshots" / commit).mkdir(parents=True)
        shutil.copy(Path(model_path(tiny_model_cfg())) / "config.json", repo / "snapshots" / commit / "config.json")
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        cache = {"enabled": True, "dir": str(tmp_path / "features")}
        assert _check({"model": {"name_or_path": repo_id}, "cache": cache},
                      {"model": {"name_or_path": f"{repo_id}-not-cached"}, "cache": cache}) == \
            ["reachable", "ModelNotFoundError"]
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def test_a_model_whose_features_are_cached_may_sweep_without_it(tmp_path, caplog):
    from moee_exp.errors import ModelNotFoundError
    from moee_exp.jobs.preflight import check_reachable

    cfg = OmegaConf.create({"model": {"name_or_path": "moee-test/gone"},
                            "cache": {"enabled": True, "dir": str(tmp_path)}})
    with pytest.raises(ModelNotFoundError):
        check_reachable(cfg.model, cfg.cache)
    (tmp_path / "ns").mkdir()  # a namespace of the feature cache, as cache.Namespace writes its meta.json
    (tmp_path / "ns" / "meta.json").write_text(json.dumps({"model": {"model": "moee-test/gone"}}))
    check_reachable(cfg.model, cfg.cache)
    assert "feature cache holds features of this model" in caplog.text
    cfg.cache.enabled = False
    with pytest.raises(ModelNotFoundError):
        check_reachable(cfg.model, cfg.cache)
