"""Bad input never ends in a traceback or a silently wrong number.

Config mistakes give one line naming the fix; odd texts embed to finite non-zero vectors; NaN is reported with the
text's index; W&B without a key or a network degrades to offline with one warning; no secret reaches a file or
the output. See also tests/test_run.py (emb=foo, α < 0, unknown task, wrong type, dense model).
"""

import logging
import os
import re
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_model_cfg
from jobs import cli, compose, error_lines

TASK = "tasks.names=[MoEEDemoSTS]"


def _env(**extra):
    env = {**os.environ, **extra}
    return {k: v for k, v in env.items() if v is not None}


# ------------------------------------------------------------------------------------------- config mistakes

# (overrides, exit code, what the output must say). Exit 2 = our one-line `error: ...`; exit 1 = Hydra's own
# message, which names the key and lists the valid options (asserted, not rewritten).
CONFIG_CASES = {
    "unknown prompt option": (["prompt=nope"], 1, ["Could not find 'prompt/nope'", "prompteol", "sentiment"]),
    "misspelt key": (["emb.alphaa=1"], 1, ["Key 'alphaa' not in 'EmbConfig'"]),
    "wrong type": (["weights.alpha=high"], 1, ["Value 'high' of type 'str' could not be converted to Float"]),
    "unknown prompt name": (["prompt.name=nope"], 2, ["prompt.name='nope' has no template; use one of none, "
                                                      "prompteol, style"]),
    "unknown emb kind": (["emb.kind=nope"], 2, ["emb.kind='nope' is not one of: hs, rw, moee_concat, moee_sum"]),
    "overwrite not a bool": (["overwrite=maybe"], 2, ["overwrite='maybe' must be true or false"]),
    "unknown demo task": (["tasks.names=[MoEEDemoSTX]"], 2, ["'MoEEDemoSTX' not found", "MoEEDemoSTS"]),
    "missing model dir": (["model=olmoe", "model.name_or_path=./no/such/dir"], 2,
                          ["model dir './no/such/dir' does not exist", "set model.name_or_path"]),
    "4-bit without bitsandbytes": (["model.quantization=4bit"], 2,
                                   ["model.quantization=4bit needs bitsandbytes: pip install 'moee-exp[quant]'"]),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_a_config_mistake_names_the_fix_without_a_traceback(case, tmp_cwd, monkeypatch):
    """Each bad command fails in a second, before any model or data is touched."""
    overrides, code, messages = CONFIG_CASES[case]
    if "bitsandbytes" in case:  # bitsandbytes cannot be imported, as on a machine without it (the import system's
        monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # own way to block a module: None in sys.modules)
    cwd = tmp_cwd
    proc = cli(TASK, "logger=none", *overrides, cwd=cwd)
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, output[-3000:]
    for message in messages:
        assert message in output
    assert "Traceback" not in output
    if code == 2:
        assert len(error_lines(proc)) == 1
    assert not list(cwd.glob("**/results/*.json"))  # nothing was computed


# ------------------------------------------------------------------------------------------------- odd texts

ODD_TEXTS = {
    "empty": "",
    "whitespace": " \t\n\r  \u3000",
    "100k characters": "word " * 20_000,
    "control characters": "a\x00b\x07c\x1b[31m red\x7f\x0c",
    "emoji": "😀👍🏽👨‍👩‍👧 🏳️‍🌈",
    "right to left": "مرحبا بالعالم שלום עולם",
    "combining marks": "e\u0301\u0327\u20dd Z\u0351\u0362\u0489 \u200b\u200d\u200f\ufeff",
    "lone surrogate": "broken \ud800 unicode",
    "private use / unassigned": "\ue000\U0010ffff\U000e0001",
    "plain": "A man is playing a guitar.",
}


@pytest.mark.parametrize(
    ("template", "normalize"),
    [('This sentence : "{text}" means in one word:"', True), ("{text}", False)],
    ids=["prompteol", "bare-unnormalized"],
)
@pytest.mark.parametrize("with_cache", [False, True], ids=["no-cache", "feature-cache"])
def test_odd_texts_give_finite_nonzero_vectors_and_long_ones_are_counted(
    template, normalize, with_cache, tmp_path, caplog
):
    from moee_exp.features.cache import FeatureCache
    from moee_exp.features.featurize import Featurizer
    from moee_exp.scoring.fuse import fuse

    cfg = {**tiny_model_cfg(), "max_length": 128}
    cache = FeatureCache(tmp_path / "features") if with_cache else None
    featurizer = Featurizer(cfg, template, normalize, progress=False, cache=cache)
    texts = list(ODD_TEXTS.values())
    with caplog.at_level(logging.WARNING):
        feats = featurizer(texts, desc="odd")
    assert featurizer.n_truncated == 1  # the 100k-character text, cut to max_length
    assert "odd: 1 text(s) truncated to max_length=128" in caplog.text
    for name in ("hs", "rw"):
        flat = feats[name].reshape(len(texts), -1)
        assert np.isfinite(flat).all(), name
        assert (np.abs(flat).sum(axis=1) > 0).all(), (name, [k for k, v in zip(ODD_TEXTS, flat) if not v.any()])
    for kind in ("hs", "rw", "moee_concat", "moee_sum"):
        emb = fuse(feats, kind)
        assert np.isfinite(emb).all() and (np.linalg.norm(emb, axis=1) > 0).all(), kind


def _poison_token_hook(lm, token_ids):
    """Make every position holding one of ``token_ids`` NaN at the embedding layer (so only texts with it go NaN)."""
    import torch

    ids = torch.tensor(sorted(token_ids))

    def hook(module, args, output):
        hit = torch.isin(args[0], ids.to(args[0].device))
        return output.masked_fill(hit[..., None], float("nan"))

    return lm.model.get_input_embeddings().register_forward_hook(hook)


@pytest.mark.parametrize("with_cache", [False, True], ids=["no-cache", "feature-cache"])
def test_nan_features_are_reported_with_the_text_index(with_cache, tmp_path):
    from moee_exp.errors import NonFiniteFeatureError
    from moee_exp.features.cache import FeatureCache
    from moee_exp.features.featurize import Featurizer, get_model

    cfg = tiny_model_cfg()
    cache = FeatureCache(tmp_path / "features") if with_cache else None
    featurizer = Featurizer(cfg, '"{text}"', progress=False, cache=cache)
    texts = ["A cat sits.", "A dog runs.", "Poisoned § text.", "Birds fly."]
    if with_cache:  # two texts cached first: the rest is extracted as a subset, and the index must still be 2
        featurizer(texts[:2], desc="warm")
    lm = get_model(cfg)
    poison = set(lm.tokenizer("§", add_special_tokens=False)["input_ids"])
    clean = set(lm.tokenizer(" ".join(t for t in texts if "§" not in t) + '".', add_special_tokens=False)["input_ids"])
    assert poison and not poison & clean
    handle = _poison_token_hook(lm, poison)
    try:
        with pytest.raises(NonFiniteFeatureError) as err:
            featurizer(texts, desc="STSx/test")
    finally:
        handle.remove()
    assert err.value.indices == [2]
    message = str(err.value)
    assert "NaN/inf for 1 text(s) of STSx/test, at text index [2]" in message and "§" in message
    assert "model.dtype=float32" in message  # names a fix
    # picklable with its fields (submitit / joblib send a job's exception back to the launcher)
    import pickle

    assert pickle.loads(pickle.dumps(err.value)).indices == [2]


def test_all_zero_features_are_an_error_too():
    from moee_exp.errors import NonFiniteFeatureError
    from moee_exp.features.extract import check_finite

    feats = {"hs": np.ones((3, 4), np.float32), "rw": np.ones((3, 2, 2), np.float32)}
    check_finite(feats)
    feats["rw"][1] = 0
    with pytest.raises(NonFiniteFeatureError, match=r"rw has an all-zero vector for 1 text\(s\), at text index \[1\]"):
        check_finite(feats)


def test_nan_in_a_job_is_one_error_line_with_indices(tmp_cwd, monkeypatch):
    import torch

    import moee_exp.features.featurize as featurize

    load = featurize.load_model

    def load_model(*args, **kwargs):  # a model whose first router has a NaN weight: RW is NaN for every text
        lm = load(*args, **kwargs)
        with torch.no_grad():
            lm.routers[0].module.weight[0, 0] = float("nan")
        return lm

    monkeypatch.setattr(featurize, "load_model", load_model)
    monkeypatch.setattr(featurize, "_loaded", {})  # the poisoned model is this test's alone: not kept for later jobs
    cache = tmp_cwd / "features"  # fresh: the features must be extracted (and are never cached when NaN)
    proc = cli(TASK, "logger=none", f"cache.dir={cache}", "progress=false", cwd=tmp_cwd)
    assert proc.returncode == 2, proc.stderr[-3000:]
    (line,) = error_lines(proc)
    assert re.match(r"error: (hs|rw) has NaN/inf for \d+ text\(s\) of MoEEDemoSTS(/test)?, at text index \[0, 1, 2", line)
    assert "Traceback" not in proc.stderr
    assert not list(tmp_cwd.glob("outputs/**/results/*.json"))
    assert not list(cache.glob("*/rw/*.npy"))  # NaN features were not cached


# ------------------------------------------------------------------------------------------ W&B and secrets

FAKE_WANDB_KEY = "0123456789abcdef" * 2 + "fakeKEY!"  # 40 characters, like a real key
FAKE_HF_TOKEN = "hf_FakeTokenThatMustNeverBeLogged123"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed when the block ends: connections are refused


def _job_dir(base: Path) -> Path:
    (config,) = base.glob("outputs/*/*/config.yaml")
    return config.parent


def _wandb_home(base: Path) -> dict:
    """W&B's own places for a key and its files, all inside ``base``: no key from this machine's ~/.netrc or
    settings reaches the job, and whatever W&B writes lands where the test can read it."""
    return {"NETRC": str(base / "netrc"), "WANDB_CONFIG_DIR": str(base / "wandb-config"),
            "WANDB_DIR": str(base / "wandb-dir"), "WANDB_CACHE_DIR": str(base / "wandb-cache"),
            "WANDB_DATA_DIR": str(base / "wandb-data")}


def test_online_without_a_key_runs_offline_with_one_warning(tmp_cwd):
    env = _env(WANDB_API_KEY=None, WANDB_MODE=None, **_wandb_home(tmp_cwd))
    proc = cli(TASK, "logger.mode=online", "progress=false", cwd=tmp_cwd, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert output.count("no W&B API key") == 1
    assert output.count("WARNING") == 1, [line for line in output.splitlines() if "WARNING" in line]
    job = _job_dir(tmp_cwd)
    assert (job / "results" / "MoEEDemoSTS.json").exists()
    assert list((job / "wandb").glob("offline-run-*/run-*.wandb"))


def test_unreachable_wandb_goes_offline_and_no_secret_is_written_or_printed(tmp_cwd):
    env = _env(
        WANDB_API_KEY=FAKE_WANDB_KEY, HF_TOKEN=FAKE_HF_TOKEN, WANDB_MODE=None, **_wandb_home(tmp_cwd),
        WANDB_BASE_URL=f"http://127.0.0.1:{_closed_port()}",  # nothing leaves this machine
        WANDB_INIT_TIMEOUT="3", WANDB_SILENT=None,
    )
    proc = cli(TASK, "logger.mode=online", "progress=false", cwd=tmp_cwd, env=env)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert output.count("W&B online init failed") == 1
    job = _job_dir(tmp_cwd)
    assert (job / "results" / "MoEEDemoSTS.json").exists() and list((job / "wandb").glob("offline-run-*"))
    for secret in (FAKE_WANDB_KEY, FAKE_HF_TOKEN):
        assert secret not in output
        for path in tmp_cwd.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


class _FakeRun:
    """Stands in for a wandb run; checks that a dataset's result file exists before W&B hears of it."""

    def __init__(self, job_dir: Path, **kwargs):
        self.job_dir, self.init_kwargs, self.logged, self.summary = job_dir, kwargs, [], {}

    def log(self, data):
        for key in data:
            if "/" in key:
                assert (self.job_dir / "results" / f"{key.split('/', 1)[1]}.json").exists(), key
        self.logged.append(data)

    def finish(self):
        pass


def test_results_are_on_disk_before_wandb_hears_of_them_and_a_wandb_failure_costs_nothing(tmp_path, monkeypatch,
                                                                                          caplog):
    import wandb

    from moee_exp.jobs.runner import run_job

    cfg = compose(TASK, "logger=wandb", "progress=false")
    runs = []

    def fake_init(**kwargs):  # opened at the job's start; each score reaches it after its file (_FakeRun.log)
        runs.append(_FakeRun(tmp_path / "ok", **kwargs))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", fake_init)
    rows = run_job(cfg, tmp_path / "ok", "group")
    assert [r["task"] for r in rows] == ["MoEEDemoSTS"]
    (fake,) = runs
    assert any("STS/MoEEDemoSTS" in d for d in fake.logged) and "avg" in fake.summary
    assert fake.init_kwargs["config"]["resume.computed_tasks"] == ["MoEEDemoSTS"]

    def broken_init(**kwargs):
        raise RuntimeError(f"wandb is broken here (key {os.environ.get('WANDB_API_KEY')})")

    monkeypatch.setattr(wandb, "init", broken_init)
    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    with caplog.at_level(logging.WARNING, logger="moee_exp.jobs.record"):
        rows = run_job(cfg, tmp_path / "broken", "group")
    assert (tmp_path / "broken" / "results" / "MoEEDemoSTS.json").exists() and len(rows) == 1
    assert "W&B unavailable (RuntimeError: wandb is broken here (key ***))" in caplog.text
    assert FAKE_WANDB_KEY not in caplog.text


def test_wandb_run_is_resumed_tagged_and_logs_each_score_once(tmp_path, monkeypatch):
    """A job resumed into its dir continues its own W&B run (same id, resume=allow); the run is tagged with what
    was computed (a dry run says so), carries no dead emb.alpha, and each dataset is one key."""
    import wandb

    from moee_exp.jobs.runner import run_job

    runs = []
    monkeypatch.setattr(wandb, "init", lambda **kw: runs.append(_FakeRun(Path(kw["dir"]), **kw)) or runs[-1])
    cfg = compose(TASK, "logger=wandb", "progress=false")
    run_job(cfg, tmp_path / "job", "group")
    run_job(cfg, tmp_path / "job", "group")  # resumed: every row reused
    first, second = (r.init_kwargs for r in runs)
    assert first["id"] == second["id"] and first["resume"] == second["resume"] == "allow"
    assert {"tiny-olmoe", "moee_sum", "paper protocol", "real data", "prompteol"} <= set(first["tags"])
    assert "emb.alpha" not in first["config"] and "emb.kind" in first["config"]
    assert not [k for r in runs for k in r.summary if k.startswith("score/")]
    assert runs[0].summary["STS/MoEEDemoSTS"] > 0
    other = compose(TASK, "logger=wandb", "progress=false", "weights.alpha=0.5")
    run_job(other, tmp_path / "other", "group")  # another job dir / config: another run
    assert runs[-1].init_kwargs["id"] != first["id"]
    dry = compose("tasks=sts", "tasks.names=[STS12]", "tasks.data=synthetic", "logger=wandb", "progress=false")
    run_job(dry, tmp_path / "dry", "group")
    assert "synthetic data" in runs[-1].init_kwargs["tags"] and runs[-1].init_kwargs["name"].endswith("-synthetic")
