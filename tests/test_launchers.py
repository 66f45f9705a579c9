"""Sweeps through Hydra's launchers: submitit (local here; SLURM's sbatch script checked), joblib processes.

Each job runs in its own process, so run.py's task function must pickle, and jobs of one sweep share the feature
cache: two jobs extracting the same model x prompt x dataset at once must leave a cache a later job reads back.
The submitit job and its requeue are real processes (the sweep's parent runs in-process); the joblib sweep, a real
`python run.py -m ...` whose two jobs share one feature cache, is tests/test_issue30_jobs.py's (with SIGTERM to it);
the others stop before a job starts (preflight, a refused sbatch, --cfg) and run in-process (tests/jobs.py).
"""

import json
import os

from jobs import ROOT, cli, stalling_env

TASK = "tasks.names=[MoEEDemoSTS]"


TASKS3 = ["MoEEDemoSTS", "MoEEDemoPairClassification", "MoEEDemoSummarization"]


def test_submitit_job_runs_in_its_own_process_and_when_preempted_is_requeued_and_resumes(tmp_cwd):
    """The job runs in the process submitit starts for it, and starts again when it is requeued: it stalls in
    dataset 2 (tests/jobs.py: stalling_env) and gets SIGTERM, as a preempted SLURM job does; the new attempt reuses
    dataset 1 and computes the rest. The sweep's parent, which pickles the job, submits it and waits, runs in this
    process (tests/jobs.py: cli). No W&B key or hub token reaches submitit's pickles and logs."""
    import signal
    import threading
    import time

    sweep = tmp_cwd / "sweep"
    secrets = {"WANDB_API_KEY": "0123456789abcdef0123456789abcdefFAKEKEY!", "HF_TOKEN": "hf_FakeTokenNeverWritten42"}
    # PYTHONPATH: the in-process parent pickles run.main by reference (the command pickles run.py's main by value,
    # with cloudpickle, as the joblib sweep of tests/test_issue30_jobs.py shows)
    env, marker = stalling_env(tmp_cwd, {**os.environ, "PYTHONPATH": str(ROOT), **secrets})
    ended, signalled = threading.Event(), []

    def preempt():  # SIGTERM to the job's process while it is in dataset 2 (the parent blocks this test's thread)
        deadline = time.monotonic() + 400
        while not marker.exists() or not marker.read_text():
            if ended.wait(0.2) or time.monotonic() > deadline:
                return
        os.kill(int(marker.read_text()), signal.SIGTERM)
        signalled.append(int(marker.read_text()))

    thread = threading.Thread(target=preempt, daemon=True)
    thread.start()
    try:
        proc = cli("-m", "hydra/launcher=local", "emb=moee_sum", "weights.alpha=1.0", "protocol=clean",
                   f"tasks.names=[{','.join(TASKS3)}]", "logger=none", "progress=false",
                   f"cache.dir={tmp_cwd / 'features'}", f"hydra.sweep.dir={sweep}", cwd=tmp_cwd, env=env)
    finally:
        ended.set()
        thread.join(60)
    logs = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert signalled, f"the job ended before dataset 2: {proc.stderr[-2000:]}{logs[-3000:]}"
    assert proc.returncode == 0, proc.stderr[-3000:] + logs[-3000:]
    for path in sweep.rglob("*"):  # submitit's pickles and logs, Hydra's configs, our results
        if path.is_file():
            assert not any(v.encode() in path.read_bytes() for v in secrets.values()), path
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 1  # the job ran in a submitit process
    assert signalled[0] != os.getpid()
    rows = {p.stem: json.loads(p.read_text()) for p in (sweep / "0" / "results").glob("*.json")}
    assert sorted(rows) == sorted(TASKS3)  # the requeued job finished the job
    first, *rest = (rows[t]["run_uid"] for t in TASKS3)
    assert len(set(rest)) == 1 and first not in rest  # dataset 1 from the first attempt, reused by the requeued one
    assert "Requeued job" in logs
    assert f"stopped for submitit's requeue: kept 1 of 3 dataset(s) in {sweep / '0' / 'results'}" in logs
    assert len((sweep / "0" / "results.csv").read_text().splitlines()) == 4


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
