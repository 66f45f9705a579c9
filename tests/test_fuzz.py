"""Property-based fuzzing (Hypothesis): no drawn value of any config key, and no input of the embed CLI, ends in a
traceback.

Keys are discovered, never listed: every field of every group schema registered in Hydra's ConfigStore
(moee_exp.jobs.config.schemas) and every root-level leaf of the composed default config. For each, values are drawn as a
user would type them on the command line: wrong types, NaN/inf, negatives, zero, huge numbers, empty strings and
lists, unknown names, unicode, ${...} interpolations, and the values the conf/ files give that key (the valid ones).

Each drawn command goes through what `python run.py` does, in-process for speed: Hydra's compose API, then
run.job() (validate, machine checks, model checks, then the job itself) with stderr captured. The outcome must be
one of:
- Hydra rejects the override (its own message, naming the key; exit 1 on the command line);
- exit 2 with exactly one `error: ...` line naming the key (or a key of its group / one it feeds) and nothing in the
  job's results/;
- the job runs (a tiny model on one small demo task; the first few valid values per key) and writes its results.
Anything else is an exception that would reach the user as a traceback: the test fails with the drawn value.
Two real `python run.py` processes prove that the in-process harness prints what the command prints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from jobs import cli, compose, process, run_py
from omegaconf import OmegaConf

# CI: the same examples every run (derandomize), a bounded count, no deadline (2 busy cores), no example database.
settings.register_profile(
    "ci", derandomize=True, max_examples=6, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("deep", parent=settings.get_profile("ci"), derandomize=False, max_examples=200)
settings.load_profile(os.environ.get("MOEE_FUZZ_PROFILE", "ci"))

BASE = {"tasks.names": "[MoEEDemoSTS]", "logger": "none", "progress": "false", "predictions": "[]"}
# Values that pass the checks run a whole (tiny) job: per key, one of the values conf/ gives it (the default
# included) and up to three others (where a NaN that slipped through the checks would crash scoring).
JOBS_PER_KEY = {"known": 1, "drawn": 3}


# ----------------------------------------------------------------------------------------------- discovery


def _leaves(node, prefix=""):
    from omegaconf import DictConfig

    for key in node:
        if isinstance(node, DictConfig) and isinstance(node._get_node(key), DictConfig):
            yield from _leaves(node[key], f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def discover_keys() -> dict[str, dict]:
    """{key: {"default": raw default text or None, "known": [values conf/ files give it]}} for every key."""
    from moee_exp.jobs.config import schemas

    default = compose()
    keys = {}
    groups = schemas()
    for group, schema in groups.items():
        for f in dataclasses.fields(schema):
            keys[f"{group}.{f.name}"] = {}
    for leaf in _leaves(default):  # root-level switches (no schema): overwrite, progress, predictions, paths.*
        if leaf.split(".")[0] not in groups:
            keys[leaf] = {}
    options: dict[str, list] = {}  # group -> its conf/ files' values (each file read once)
    for key, info in keys.items():
        raw = OmegaConf.select(default, key, throw_on_resolution_failure=False)
        info["default"] = raw
        known = set()
        group, _, name = key.partition(".")
        if name and group not in options:
            options[group] = []
            for path in (ROOT / "conf" / group).glob("*.yaml"):
                text = path.read_text()
                data = yaml.safe_load(text) or {}
                options[group].append(data.get(group, data) if "@package _global_" in text else data)
        for data in options.get(group, []) if name else ():
            if isinstance(data, dict) and name in data and not isinstance(data[name], dict):
                known.add(yaml.safe_dump(data[name], default_flow_style=True).strip().removesuffix("..."). strip())
        info["known"] = sorted(known)
    return keys


KEYS = discover_keys()


def test_discovery_finds_every_schema_field_and_root_switch():
    from moee_exp.jobs.config import schemas

    fields = {f"{g}.{f.name}" for g, s in schemas().items() for f in dataclasses.fields(s)}
    assert fields <= set(KEYS) and {"emb.alpha", "model.device", "model.max_length", "overwrite"} <= set(KEYS)
    assert {"hs", "rw", "moee_concat", "moee_sum"} <= set(KEYS["emb.kind"]["known"])


# ------------------------------------------------------------------------------------------------- values


def _quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


NUMBERS = ["nan", "inf", "-inf", "-1", "0", "-0.0", "1", "3", "0.5", "1e309", "1e300", "1e-320", "2147483648",
           "99999999999999999999", "-2147483649", "513", "100000"]
SPECIALS = ["null", "''", "' '", "[]", "true", "false", "{}", "{a: 1}", "'${nope}'", "'{text}'", "cuda", "cuda:7",
            "cpu", "mps", "tpu", "'/proc/forbidden'", "'/dev/null/x'"]
# Tried for every key on every run (Hypothesis @example), before the drawn values
EDGE_CASES = ["nan", "inf", "-1", "0", "1e300", "''", "[]", "null", "'${nope}'", "'☃ ünï'"]
UNICODE = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)


def value_texts(key: str) -> st.SearchStrategy[str]:
    info = KEYS[key]
    known = info["known"] + ([str(info["default"])] if isinstance(info["default"], (str, int, float)) else [])
    strategies = [st.sampled_from(sorted(set(known)))] if known else []  # first: Hypothesis leans to it
    strategies += [
        st.sampled_from(NUMBERS),
        st.sampled_from(SPECIALS),
        st.integers(-(2**40), 2**40).map(str),
        st.floats().map(repr),
        UNICODE.map(_quote),
        st.tuples(UNICODE, UNICODE).map(lambda ab: _quote(f"{ab[0]}{{text}}{ab[1]}")),  # a template-like string
        st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,12}", fullmatch=True),  # an unknown name, unquoted
        st.lists(st.one_of(UNICODE.map(_quote), st.sampled_from(["MoEEDemoSTS", "STS", "x", "1", "null"])),
                 max_size=3).map(lambda xs: "[" + ",".join(xs) + "]"),
    ]
    return st.one_of(strategies)


# ------------------------------------------------------------------------------------------------ harness


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A cwd for relative paths drawn as values (cache dirs, model dirs)."""
    path = tmp_path_factory.mktemp("fuzz")
    old = Path.cwd()
    os.chdir(path)
    yield path
    os.chdir(old)


def run_in_process(overrides: dict[str, str], job_dir: Path, run: bool) -> tuple[str, int, str]:
    """What `python run.py k=v ...` does, in this process: ("hydra", 1, message) | ("job", code, stderr)."""
    from hydra.errors import CompactHydraException

    import run as run_py

    args = [f"{k}={v}" for k, v in overrides.items()]
    try:
        cfg = compose(*args)
    except CompactHydraException as err:  # printed by Hydra as a message (no traceback), exit 1
        cause = f"\n{err.__cause__}" if err.__cause__ is not None else ""
        return "hydra", 1, f"{err}{cause}"
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        code = run_py.job(cfg, job_dir, "fuzz", run=run)
    return "job", code, stderr.getvalue()


def _feeds(key: str, container: dict) -> set[str]:
    """The keys whose default value interpolates ``key`` (an error may name them: paths.cache_dir -> cache.dir)."""
    out = set()
    for other in KEYS:
        value = container
        for part in other.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        # ${key} or a nested ${key.${...}} (protocol=paper's emb.standardize: ${moee.paper_standardize:${emb.kind}})
        if isinstance(value, str) and (f"${{{key}}}" in value or f"${{{key}." in value):
            out.add(other)
    return out


_DEFAULT = OmegaConf.to_container(compose(), resolve=False)
FEEDS = {key: _feeds(key, _DEFAULT) for key in KEYS}
jobs_run: Counter = Counter()


def check_outcome(key: str, value: str, kind: str, code: int, message: str, job_dir: Path, ran: bool = False) -> None:
    assert "Traceback" not in message, message
    results = list((job_dir / "results").glob("*")) if (job_dir / "results").exists() else []
    if kind == "hydra":
        assert key.split(".")[-1] in message or value in message, message  # Hydra names the key / override
        return
    if code == 0:
        return
    assert code == 2, message
    lines = [line for line in message.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and len(lines) == 1, message
    group = key.split(".")[0] + "."
    named = {key, *FEEDS[key]}
    assert any(k in errors[0] for k in named) or (group in errors[0] and "." in key), (key, errors[0])
    if ran:  # the job itself failed (a dataset not available offline, NaN features): the rows before it are kept
        assert all(json.loads(p.read_text())["main_score"] is not None for p in results if p.suffix == ".json")
    else:
        assert not results, results  # a config mistake: nothing computed


@pytest.mark.parametrize("key", sorted(KEYS))
def test_every_value_of_every_key_succeeds_or_is_one_error_line(key, workdir):
    @given(value=value_texts(key))
    def fuzz(value):
        overrides = {**{k: v for k, v in BASE.items() if k != key}, key: value}
        if key.startswith("logger."):
            overrides["logger"] = "wandb"  # W&B's own checks (project, tags, mode) are reached
        job_dir = Path(tempfile.mkdtemp(prefix="job", dir=workdir))
        kind, code, message = run_in_process(overrides, job_dir, run=False)
        event(f"{kind} exit {code}")
        check_outcome(key, value, kind, code, message, job_dir)
        origin = "known" if value in KEYS[key]["known"] or value == str(KEYS[key]["default"]) else "drawn"
        if kind == "job" and code == 0 and jobs_run[key, origin] < JOBS_PER_KEY[origin]:  # the job must run too
            jobs_run[key, origin] += 1
            kind, code, message = run_in_process(overrides, job_dir, run=True)
            event(f"job {kind} exit {code}")
            check_outcome(key, value, kind, code, message, job_dir, ran=True)
            if code == 0:
                assert list((job_dir / "results").glob("*.json")), message

    for value in reversed(EDGE_CASES):
        fuzz = example(value=value)(fuzz)
    fuzz()


# The five cases of issue 13, and that the in-process harness prints what the command prints.
ISSUE_CASES = {
    "weights.alpha=nan": "error: weights.alpha=nan is not a finite number",
    "weights.alpha=inf": "error: weights.alpha=inf is not a finite number",
    "emb.alpha=0.5": "error: emb.alpha is now weights.alpha",
    "model.device=cuda": "error: model.device='cuda' but torch sees no CUDA GPU here",
    "model.max_length=100000": "error: model.max_length=100000 exceeds the model's max_position_embeddings=512",
}


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="model.device=cuda is valid on a GPU machine")
def test_issue_cases_in_process_and_on_the_command_line_give_the_same_line(workdir):
    from concurrent.futures import ThreadPoolExecutor

    def command(override):
        cwd = Path(tempfile.mkdtemp(prefix="cli", dir=workdir))
        proc = process(run_py(*(f"{k}={v}" for k, v in BASE.items()), override), cwd=cwd, timeout=300,
                       env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return proc, cwd

    on_command_line = ["weights.alpha=nan", "model.device=cuda"]  # seconds of imports each: two are enough
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = dict(zip(on_command_line, pool.map(command, on_command_line)))
    for override, expected in ISSUE_CASES.items():
        key, value = override.split("=", 1)
        kind, code, message = run_in_process({**BASE, key: value}, workdir / "in-process", run=True)
        assert (kind, code) == ("job", 2) and message.startswith(expected), message
        assert not (workdir / "in-process" / "results").exists()
        if override in procs:
            proc, cwd = procs[override]
            assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
            assert proc.stderr.strip().splitlines()[-1] == message.strip(), (proc.stderr[-2000:], message)
            assert not list(cwd.glob("**/results/*.json"))


def test_a_hydra_type_error_is_hydras_message_on_the_command_line_too(workdir):
    kind, code, message = run_in_process({**BASE, "model.batch_size": "'x'"}, workdir / "hydra", run=False)
    proc = cli("model.batch_size='x'", "logger=none", cwd=workdir)  # through Hydra's main, as the command
    assert (kind, code, proc.returncode) == ("hydra", 1, 1)
    assert "Value 'x' of type 'str' could not be converted to Integer" in message
    assert "Value 'x' of type 'str' could not be converted to Integer" in proc.stderr
    assert "full_key: model.batch_size" in message and "full_key: model.batch_size" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------- W&B


def test_a_wandb_job_leaves_no_staging_dir_in_the_system_temp_dir(workdir, monkeypatch):
    """wandb makes its staging dirs in the system temp dir when it is imported and removes them only at a clean exit
    (a killed job would leave them). The job moves them into its own wandb/ dir. This process's dirs are made afresh
    here, as a fresh import makes them (other processes, e.g. a test's job, may have their own in the temp dir)."""
    from wandb.sdk.artifacts.artifact import Artifact
    from wandb.sdk.data_types import _private

    staging = (_private.MEDIA_TMP, Artifact._TMP_DIR)  # the objects wandb's modules hold (an earlier job moved them)
    for tmp, suffix in zip(staging, ("wandb-media", "wandb-artifacts")):
        monkeypatch.setattr(tmp, "name", tempfile.mkdtemp(suffix))
    made = [Path(tmp.name) for tmp in staging]
    assert all(p.parent == Path(tempfile.gettempdir()) and p.is_dir() for p in made)
    job_dir = workdir / "wandb-job"
    kind, code, message = run_in_process({**BASE, "logger": "wandb"}, job_dir, run=True)
    assert (kind, code) == ("job", 0), message
    assert list((job_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert not any(p.exists() for p in made)  # removed from the system temp dir
    assert all(Path(tmp.name).is_relative_to(job_dir / "wandb") for tmp in staging)
    assert not (job_dir / "wandb" / ".staging").exists()  # emptied and removed after the job
    assert list((job_dir / "wandb").glob("offline-run-*/files/media/table/*.table.json"))  # staged through them


# ---------------------------------------------------------------------------------------------- embed CLI


@pytest.fixture(scope="module")
def embed_main(tmp_path_factory):
    """moee_exp.integrations.embed.main, with the tiny model loaded once for all drawn inputs (same function otherwise)."""
    import moee_exp.integrations.embed as embed

    loaded = {}
    real = embed.load_model

    def load_once(path, **kwargs):
        key = (path, tuple(sorted(kwargs.items())))
        if key not in loaded:
            loaded[key] = real(path, **kwargs)
        return loaded[key]

    embed.load_model = load_once
    yield embed.main
    embed.load_model = real


ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "shift_jis", "koi8-r"]
TEXTS = st.lists(st.one_of(UNICODE, st.sampled_from(["", " ", "word " * 3000, "a\tb", "caf\xe9", "\x00\x07"])),
                 min_size=1, max_size=4)


@st.composite
def embed_inputs(draw):
    """(file bytes or None for a missing file, extra argv). Texts in some encoding, or raw bytes, with \\n or \\r\\n."""
    kind = draw(st.sampled_from(["text"] * 5 + ["binary", "empty", "missing", "dir"]))
    argv = []
    data = None
    if kind == "text":
        texts = draw(TEXTS)
        sep = draw(st.sampled_from(["\n", "\r\n"]))
        encoding = draw(st.sampled_from(ENCODINGS))
        data = sep.join(texts).encode(encoding, errors="replace")
        if draw(st.booleans()):  # mostly the file's own encoding, sometimes another or a bad name
            argv += ["--encoding", draw(st.sampled_from([encoding] * 4 + [*ENCODINGS, "nope", "rot13", ""]))]
    elif kind == "binary":
        data = draw(st.binary(max_size=64))
    elif kind == "empty":
        data = b""
    elif kind == "dir":
        data = "dir"
    # (Hypothesis leans to the first option and to 0: the valid values come first, a flag is added on a 7)
    for flag, values in [("--alpha", ["2.5", "0", "nan", "-1", "inf", "x"]), ("--batch-size", ["1", "0", "-3", "x"]),
                         ("--max-length", ["8", "64", "4", "100000"]), ("--device", ["cpu", "auto", "cuda", "nope"]),
                         ("--template", ["{text}", "no placeholder", "{text}{text}"]),
                         ("--emb", ["hs", "moee_concat", "nope"])]:
        if draw(st.integers(0, 7)) == 7:
            argv += [flag, draw(st.sampled_from(values))]
    output = draw(st.sampled_from(["out/feats.npz"] * 4 + ["new/dir/feats", "file.txt/feats.npz", "out"]))
    return kind, data, argv, output


@given(case=embed_inputs())
@settings(max_examples=40)
def test_every_embed_input_gives_an_npz_or_one_error_line(case, embed_main, workdir):
    kind, data, argv, output = case
    case_dir = Path(tempfile.mkdtemp(prefix="embed", dir=workdir))
    (case_dir / "file.txt").write_text("a file, not a dir")
    (case_dir / "out").mkdir()
    source = case_dir / "input.txt"
    if data == "dir":
        source.mkdir()
    elif data is not None:
        source.write_bytes(data)
    out = case_dir / output
    argv = ["--model", "tiny", "--cache-dir", os.environ["MOEE_CACHE_DIR"], "--input", str(source),
            "--output", str(out), *argv]
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            code = embed_main(argv)
        except SystemExit as exit_:  # argparse
            code = exit_.code
    message = stderr.getvalue()
    event(f"exit {code}")
    assert "Traceback" not in message
    if code == 0:
        with np.load(out) as npz:
            n = len(npz["hs"])
            assert n == len(npz["rw"]) == len(npz["emb"]) and np.isfinite(npz["emb"]).all()
        assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]
        return
    errors = [line for line in message.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1, message
    assert not (out.is_file() and out.name.endswith(".npz")), "nothing is written on an error"


def test_latin1_input_names_the_encoding_option_and_is_read_with_it(workdir, embed_main):
    src = workdir / "latin1.txt"
    src.write_bytes("café au lait\r\nnaïve\r\n".encode("latin-1"))
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):  # `python -m moee_exp.integrations.embed ...`: its main, in-process
        code = embed_main(["--model", "tiny", "--cache-dir", os.environ["MOEE_CACHE_DIR"], "--input", str(src),
                           "--output", str(workdir / "l.npz")])
    assert code == 2 and "Traceback" not in stderr.getvalue()
    (line,) = [line for line in stderr.getvalue().splitlines() if line.startswith("error:")]
    assert "is not valid utf-8 (byte 0xe9 at offset 3)" in line and "--encoding latin-1" in line
    assert not (workdir / "l.npz").exists()
    code = embed_main(["--model", "tiny", "--cache-dir", os.environ["MOEE_CACHE_DIR"], "--input", str(src),
                       "--encoding", "latin-1", "--output", str(workdir / "l.npz"), "--emb", "hs"])
    assert code == 0
    from moee_exp.integrations.embed import read_texts

    assert read_texts(src, "latin-1") == ["café au lait", "naïve"]  # \r\n ends a line; no empty last text
    with np.load(workdir / "l.npz") as npz:
        assert npz["hs"].shape[0] == 2


def test_the_sweep_preflight_runs_the_same_checks_but_not_the_machine_ones():
    """A sweep's shared value is checked in the launching process (moee_exp/jobs/preflight.py) by the same validate();
    whether the device exists is left to the jobs (the launching process may be a SLURM login node without GPUs)."""
    from moee_exp.jobs.preflight import Preflight

    def preflight(override):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                Preflight().on_multirun_start(compose(*(f"{k}={v}" for k, v in BASE.items()), override))
            except SystemExit as exit_:
                return exit_.code, stderr.getvalue()
        return 0, stderr.getvalue()

    for override, expected in ISSUE_CASES.items():
        code, message = preflight(override)
        if override.startswith("model.device"):
            assert (code, message) == (0, "")
        else:
            assert code == 2 and message.startswith(expected) and len(message.splitlines()) == 1, message
    assert preflight("predictions=[STX]") == (2, "error: predictions: unknown mteb task type(s) 'STX' (did you "
                                                 "mean STS?); e.g. predictions=[STS,Clustering]\n")
