"""Sweeps through Hydra's launchers: submitit (local here; SLURM's sbatch script checked), joblib processes.

Each job runs in its own process, so run.py's task function must pickle, and jobs of one sweep share the feature
cache: two jobs extracting the same model x prompt x dataset at once must leave a cache a later job reads back.
The submitit sweep runs as a real `python run.py -m ...` (with a job preempted and requeued on the way); the joblib
sweep is tests/test_issue30_jobs.py's (with SIGTERM to it); the others stop before a job starts (preflight, a
refused sbatch, --cfg) and run in-process (tests/jobs.py).
"""

import json
import os

import numpy as np
from jobs import cli, output, run_py, stalling_env, start

TASK = "tasks.names=[MoEEDemoSTS]"


TASKS3 = ["MoEEDemoSTS", "MoEEDemoPairClassification", "MoEEDemoSummarization"]


def test_submitit_sweep_shares_one_feature_cache_and_a_preempted_job_is_requeued_and_resumes(tmp_cwd, monkeypatch):
    """Two submitit jobs (only alpha differs) start together on an empty feature cache: both extract and write the
    same namespace at once. The first to reach dataset 2 stalls there (tests/jobs.py: stalling_env) and gets SIGTERM,
    as a preempted SLURM job does: submitit requeues it, and the new attempt reuses dataset 1 and computes the rest."""
    import signal
    import time

    sweep, cache = tmp_cwd / "sweep", tmp_cwd / "features"
    secrets = {"WANDB_API_KEY": "0123456789abcdef0123456789abcdefFAKEKEY!", "HF_TOKEN": "hf_FakeTokenNeverWritten42"}
    env, marker = stalling_env(tmp_cwd, {**os.environ, "PYTHONUNBUFFERED": "1", **secrets})
    parent = start(run_py("-m", "hydra/launcher=local", "emb=moee_sum", "weights.alpha=0.5,1.0", "protocol=clean",
                          f"tasks.names=[{','.join(TASKS3)}]", "logger=none", "progress=false", f"cache.dir={cache}",
                          f"hydra.sweep.dir={sweep}"), cwd=tmp_cwd, env=env)
    try:
        deadline = time.monotonic() + 400
        while not marker.exists() or not marker.read_text():
            assert parent.poll() is None, f"the sweep ended before a job reached dataset 2: {output(parent)[1][-3000:]}"
            assert time.monotonic() < deadline, "no job reached dataset 2"
            time.sleep(0.2)
        os.kill(int(marker.read_text()), signal.SIGTERM)  # the job's own process (submitit's), not the sweep's
        parent.wait(400)
    finally:
        parent.kill()
        parent.wait()
    stdout, stderr = output(parent)
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert parent.returncode == 0, stderr[-3000:] + logs[-3000:]
    for path in sweep.rglob("*"):  # submitit's pickles and logs, Hydra's configs, our results
        if path.is_file():
            assert not any(v.encode() in path.read_bytes() for v in secrets.values()), path
    jobs = {int(d.name): {p.stem: json.loads(p.read_text()) for p in (d / "results").glob("*.json")}
            for d in sweep.iterdir() if (d / "results").is_dir()}
    assert sorted(jobs) == [0, 1] and all(sorted(rows) == sorted(TASKS3) for rows in jobs.values())
    assert sorted({r["alpha"] for r in rows.values()}.pop() for rows in jobs.values()) == [0.5, 1.0]
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2  # each job ran in its own submitit process

    # the preempted job: dataset 1 from its first attempt, reused by the requeued one, which computed the rest
    (requeued,) = [n for n, rows in jobs.items() if len({rows[t]["run_uid"] for t in TASKS3}) == 2]
    first, *rest = (jobs[requeued][t]["run_uid"] for t in TASKS3)
    assert len(set(rest)) == 1 and first not in rest
    assert "Requeued job" in logs
    assert f"stopped for submitit's requeue: kept 1 of 3 dataset(s) in {sweep / str(requeued) / 'results'}" in logs
    assert len((sweep / str(requeued) / "results.csv").read_text().splitlines()) == 4
    assert not [p for p in cache.rglob("*") if p.name.startswith(".tmp")]  # no writer left a temp file behind

    # The texts' features can now all be read from the cache the two wrote (nothing is extracted again), and they
    # equal a fresh extraction: concurrent writes neither lost nor corrupted anything.
    from conftest import tiny_model_cfg

    from moee_exp.features import featurize
    from moee_exp.features.cache import FeatureCache
    from moee_exp.features.prompts import TEMPLATES
    from moee_exp.scoring.demo_tasks import DEMO_TASKS

    task = DEMO_TASKS["MoEEDemoSTS"]()
    task.load_data()
    texts = list(dict.fromkeys([*task.dataset["test"]["sentence1"], *task.dataset["test"]["sentence2"]]))
    cfg = tiny_model_cfg()

    def no_extraction(*args, **kwargs):
        raise AssertionError("a feature was missing from the shared cache")

    with monkeypatch.context() as patch:
        patch.setattr(featurize, "extract", no_extraction)
        cached = featurize.Featurizer(cfg, TEMPLATES["prompteol"], progress=False, cache=FeatureCache(cache))(texts)
    fresh = featurize.Featurizer(cfg, TEMPLATES["prompteol"], progress=False)(texts)
    for name in ("hs", "rw"):
        np.testing.assert_allclose(cached[name], fresh[name], atol=1e-5)


def test_a_mistake_shared_by_the_sweep_stops_it_before_anything_is_submitted(tmp_cwd):
    proc = cli("-m", "hydra/launcher=local", "emb=hs", "prompt=none,prompteol", "model=olmoe",
               "model.name_or_path=./no/such/dir", TASK, "logger=none", f"hydra.sweep.dir={tmp_cwd / 'sweep'}",
               cwd=tmp_cwd)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: model dir './no/such/dir' does not exist or has no config.json; set "
                      "model.name_or_path to a saved checkpoint dir or a hub id"]
    assert "Traceback" not in proc.stderr and not (tmp_cwd / "sweep").exists()  # no job was submitted


FAKE_SBATCH = """#!/bin/sh
for last; do :; done
cp "$last" "$SBATCH_CAPTURE"
echo "sbatch: error: not a SLURM cluster (test)" >&2
exit 1
"""


def test_slurm_launcher_asks_for_one_gpu_per_job_and_takes_overrides(tmp_cwd):
    """No SLURM here: a stand-in sbatch keeps the job script submitit writes and refuses the submission."""
    bin_dir = tmp_cwd / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexec \"$@\"\n")  # submitit checks that srun exists
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    script = tmp_cwd / "job.sbatch"
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SBATCH_CAPTURE": str(script)}
    proc = cli("-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu-test", "hydra.launcher.timeout_min=30",
               "hydra.launcher.mem_gb=32", "emb=hs", "prompt=none,prompteol", TASK, "logger=none",
               f"hydra.sweep.dir={tmp_cwd / 'sweep'}", cwd=tmp_cwd, env={**os.environ, **env})
    assert proc.returncode != 0 and "not a SLURM cluster (test)" in proc.stderr
    lines = set(script.read_text().splitlines())
    for line in ("#SBATCH --gpus-per-node=1", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH --partition=gpu-test", "#SBATCH --time=30", "#SBATCH --mem=32GB",
                 "#SBATCH --array=0-1%2"):  # 2 jobs, at most array_parallelism (16) at once
        assert line in lines, line
    assert not list(tmp_cwd.glob("sweep/*/results"))


def test_launcher_configs_extend_the_plugins_defaults(tmp_cwd):
    """Our files only set what they change; everything else is the plugin's own config (and its schema)."""
    proc = cli("hydra/launcher=slurm", "hydra.launcher.qos=high", "--cfg", "hydra", "-p", "hydra.launcher",
               cwd=tmp_cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "SlurmLauncher" in out and "qos: high" in out and "signal_delay_s: 120" in out
    assert "max_num_timeout: 2" in out  # a timed-out or preempted job is requeued and resumes
    bad = cli("hydra/launcher=slurm", "hydra.launcher.gpus=1", "--cfg", "hydra", cwd=tmp_cwd)
    assert bad.returncode != 0 and "Key 'gpus' not in 'SlurmQueueConf'" in bad.stderr
