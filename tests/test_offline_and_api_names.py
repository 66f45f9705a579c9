"""Offline, a hub model fails in seconds with one line; the Python API takes the model names the CLI takes."""

import contextlib
import io
import socket
import time

import numpy as np
import pytest

from moee_exp.errors import ModelNotFoundError
from moee_exp.features import loading

NOT_CACHED = "allenai/OLMoE-1B-7B-0924"  # conftest gives every test run an empty HF cache


@pytest.fixture
def fresh_hub_state(monkeypatch):
    """hub_offline's once-per-process probe forgotten, and whatever it switches restored after the test."""
    import datasets
    from huggingface_hub import constants

    monkeypatch.setattr(loading, "_HUB_STATE", {})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", datasets.config.HF_HUB_OFFLINE)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # restored to the suite's value afterwards
    return constants


@pytest.fixture(scope="module", autouse=True)
def imported():
    """transformers' config machinery imported before anything is timed (seconds of imports, not of the hub)."""
    from transformers import AutoConfig  # noqa: F401

    loading.register_own_models()


def test_with_hf_hub_offline_a_hub_id_fails_at_once_naming_why():
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as err:
        loading.check_model({"name_or_path": NOT_CACHED}, reachable=True)
    assert time.perf_counter() - start < 5  # no retries (the hub's were ~35 s)
    assert "HF_HUB_OFFLINE=1" in str(err.value) and f"hf download {NOT_CACHED}" in str(err.value)


def test_an_unreachable_hub_switches_the_process_offline_and_fails_at_once(fresh_hub_state, monkeypatch):
    constants = fresh_hub_state
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # no HF_HUB_OFFLINE set ...
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # ... and no hub there (nothing listens)
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as err:
        loading.check_model({"name_or_path": NOT_CACHED}, reachable=True)
    assert time.perf_counter() - start < 5
    assert "127.0.0.1:9 is not reachable" in str(err.value)
    assert constants.HF_HUB_OFFLINE is True  # every later hub call (tokenizer, weights, datasets) reads the cache
    import os

    import datasets

    assert os.environ["HF_HUB_OFFLINE"] == "1" and datasets.config.HF_HUB_OFFLINE is True


def test_a_reachable_hub_is_left_alone(fresh_hub_state, monkeypatch):
    constants = fresh_hub_state
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert loading.hub_offline() is None
    assert constants.HF_HUB_OFFLINE is False


def test_a_job_on_a_hub_model_offline_is_one_line_in_seconds(tmp_path):
    from jobs import compose

    import run as run_py

    cfg = compose("model=olmoe", "model.quantization=none", "tasks.data=synthetic", "logger=none")
    stderr = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = run_py.job(cfg, tmp_path / "job", "offline")
    lines = [ln for ln in stderr.getvalue().splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: could not load"), lines
    assert time.perf_counter() - start < 5


# ---- the Python API takes conf/model names ----------------------------------------------------------------------


def test_load_model_takes_the_names_the_cli_takes():
    import moee_exp
    from moee_exp.integrations import api

    lm = moee_exp.load_model("tiny")
    assert lm.n_experts == 8 and len(lm.routers) == 4  # conf/model/tiny.yaml: 4 layers x 8 experts
    assert api.load_model("tiny_mixtral").model.config.model_type == "mixtral"
    assert api.resolve_model("olmoe") == (NOT_CACHED, False)
    assert api.resolve_model("deepseek-ai/deepseek-moe-16b-base") == ("deepseek-ai/deepseek-moe-16b-base", False)
    # a hub model's name: its hub id is what is looked for (and, offline, named in the one line)
    with pytest.raises(ModelNotFoundError, match=f"hf download {NOT_CACHED}"):
        moee_exp.load_model("olmoe")


def test_a_local_dir_wins_over_a_conf_name(tmp_path, monkeypatch):
    from moee_exp.integrations import api

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()
    assert api.resolve_model("tiny") == ("tiny", False)  # the user's dir, as given


def test_embed_texts_and_sentence_transformer_take_conf_names():
    from moee_exp import embed_texts
    from moee_exp.integrations import api
    from moee_exp.integrations.st import moee_sentence_transformer

    feats = embed_texts(api.load_model("tiny"), ["one text", "another"])
    assert feats["hs"].shape == (2, 64) and feats["rw"].shape == (2, 4, 8)
    model = moee_sentence_transformer("tiny", kind="hs")
    emb = model.encode(["one text", "another"])
    assert emb.shape == (2, 64)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    assert unit(emb) == pytest.approx(unit(feats["hs"]), abs=1e-4)  # the same model's HS
    assert model[0].spec.model.name_or_path == "tiny"  # saved as given: a saved module resolves it again when loaded
