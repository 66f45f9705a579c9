"""Test setup: everything offline, every cache in a temp dir, tiny models built once per test run (all workers)."""

import os
import tempfile
import uuid
from pathlib import Path

# One dir per test run, shared by pytest-xdist's workers (same PYTEST_XDIST_TESTRUNUID, which pytest_configure below
# makes this process's when it starts them): each tiny model is built and each feature cached once per run, not once
# per worker (both are safe under concurrent jobs, as on a cluster).
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID") or uuid.uuid4().hex
_TMP = Path(tempfile.gettempdir()) / f"moee-tests-{_RUN}"
_TMP.mkdir(exist_ok=True)


def _share_cores(workers: int) -> None:
    """Each worker's torch (the jobs it runs in-process, and the processes it starts) takes its share of the cores:
    N workers x all-core thread pools would oversubscribe the machine and slow every test."""
    if workers > 1:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            os.environ.setdefault(var, str(max(1, (os.cpu_count() or 1) // workers)))


_share_cores(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
os.environ.update(
    HF_HUB_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    WANDB_MODE="offline",
    WANDB_SILENT="true",
    WANDB_ERROR_REPORTING="false",
    WANDB_DISABLE_GIT="true",
    WANDB__SAVE_REQUIREMENTS="false",  # (x_save_requirements) each run would parse every installed package's metadata
    WANDB_DIR=str(_TMP / "wandb"),
    MTEB_CACHE=str(_TMP / "mteb"),  # before mteb is imported: it creates its cache dir at import
    MOEE_CACHE_DIR=str(_TMP / "moee"),
    HF_HOME=str(_TMP / "hf"),  # an empty HF cache: no test sees a model the machine happens to hold
)

import pytest  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_FAMILIES = ["tiny", "tiny_qwen2_moe", "tiny_mixtral", "tiny_qwen3_moe", "tiny_deepseek_v3", "tiny_deepseek_moe"]


def tiny_model_cfg(name: str = "tiny") -> dict:
    """conf/model/<name>.yaml as the runner sees it (schema defaults + file), with the session cache dir."""
    from moee_exp.jobs.config import ModelConfig

    cfg = dict(ModelConfig().__dict__)
    cfg.update({k: v for k, v in yaml.safe_load((ROOT / "conf/model" / f"{name}.yaml").read_text()).items() if k != "defaults"})
    cfg["cache_dir"] = os.environ["MOEE_CACHE_DIR"]
    return cfg


def pytest_configure(config):
    if not hasattr(config, "workerinput") and config.getoption("tx", None) and config.option.testrunuid is None:
        config.option.testrunuid = _RUN  # the workers' run dir is this process's
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):  # a process that runs tests
        _build_mteb_benchmarks_before_torch()


def _build_mteb_benchmarks_before_torch() -> None:
    """mteb builds its benchmark registry (~2200 task objects) on first use, seeding torch at each one if torch is
    imported. While CUDA is uninitialized, torch records each seeding call's stack (traceback.format_stack), ~9400
    times: 2 s of CPU in a fresh process, ~5 s deep inside a test. Built here, before the test modules import torch,
    it takes 0.4 s; the tests' jobs then find it built, as a second job in one process does."""
    import mteb  # (the test modules import it anyway; MTEB_CACHE is set above)

    mteb.get_benchmarks()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config, specs):
    _share_cores(len(specs))  # before the workers start: they inherit it


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session):
    """Collecting imports the test modules and with them torch, transformers, mteb (~800k objects that live as long
    as the worker): the cyclic garbage collector would walk them all again at each of its full passes (~3 s of each
    worker's collection on 2 cores). It pauses while they are imported; what they left is collected once, the rest
    frozen (gc.freeze: never walked again, still freed by reference counting), and it runs as usual for the tests."""
    import gc

    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        gc.freeze()
        gc.enable()


# The slowest modules, longest first (pytest --durations=0 on 2 cores), handed out before the rest: with
# `--dist loadscope --no-loadscope-reorder` a module is one unit of work in collection order, and a long one handed
# out last would leave the other worker idle at the end. Only an order: a module missing here runs after these.
SLOW_FIRST = ["test_coverage", "test_issue30_jobs", "test_fuzz", "test_paper_protocol", "test_launchers", "test_readme",
              "test_paper_tasks", "test_run", "test_analysis", "test_faults", "test_jobs", "test_cross_product",
              "test_weights", "test_mteb_mocks", "test_resume", "test_layout"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.path)).stem, len(rank)))  # stable: each module keeps its order


@pytest.fixture(scope="session")
def tiny_lm():
    """Loaded tiny models by family name, built and loaded once per session."""
    from moee_exp.features.featurize import model_path
    from moee_exp.features.loading import load_model

    loaded = {}

    def get(name: str = "tiny"):
        if name not in loaded:
            loaded[name] = load_model(model_path(tiny_model_cfg(name)))
        return loaded[name]

    return get


@pytest.fixture
def tmp_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def _logging_as_a_fresh_process():
    """Each test sees our loggers as a fresh process has them, whatever an earlier test in the same xdist worker ran
    (a library's logging setup may disable existing loggers, set their level, or raise logging.disable)."""
    import logging

    logging.disable(logging.NOTSET)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("moee_exp") and isinstance(logger, logging.Logger):
            logger.disabled = False
            logger.setLevel(logging.NOTSET)  # (a full run once found one at ERROR: its warnings then never reached)
    yield
