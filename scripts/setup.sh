#!/usr/bin/env bash
# Create .venv in the repo and install the locked environment (requirements/*.txt, made by scripts/lock.sh) and
# moee-exp into it: every package at the version the tests passed with, checked against its hash.
#   bash scripts/setup.sh        # what the experiments need (requirements/run.txt: 4-bit, launchers, integrations)
#   bash scripts/setup.sh test   # + the test tools (requirements/test.txt)
# TORCH_SPEC picks the torch build, installed first: by default the CPU/CUDA wheel of the locked version from the
# package index (`torch==2.13.0`); e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
# for another CUDA. A torch already in .venv is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
lock="requirements/${1:-run}.txt"
[ -f "$lock" ] || { echo "error: no $lock (use: bash scripts/setup.sh [test])" >&2; exit 2; }
[ -x .venv/bin/python ] || python3 -m venv .venv
pip=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${pip[@]}" --upgrade pip
# torch first: a bare `torch` requirement would pull a multi-GB CUDA build on a CPU machine, and its build is the
# user's choice (CPU, CUDA version); it is the one package the lock leaves out.
# shellcheck disable=SC2086  # TORCH_SPEC may carry pip options (--index-url ...)
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" ${TORCH_SPEC:-torch==2.13.0}
# exactly the lock: no resolution (--no-deps), every file checked against its hash. pip by default (it reads the
# machine's pip configuration: mirrors, find-links); SETUP_WITH_UV=1 installs the same files with uv, ~6x faster
if [ "${SETUP_WITH_UV:-0}" = 1 ]; then
    "${pip[@]}" "uv==0.13.9"
    .venv/bin/python -m uv pip install -q --python .venv/bin/python --no-deps --require-hashes -r "$lock"
else
    "${pip[@]}" --no-deps --require-hashes -r "$lock"
fi
"${pip[@]}" --no-deps --no-build-isolation -e .
# the lock and the chosen torch agree (a torch of another version may need other versions of its dependencies)
.venv/bin/python -m pip check >/dev/null || { .venv/bin/python -m pip check >&2; echo "error: the installed packages \
conflict (above); TORCH_SPEC must name torch of the locked version (2.13.0)" >&2; exit 1; }
# Our own code byte-compiled, as pip compiles the packages it installs (an editable install is not): each job process
# loads it instead of compiling it again (~0.1 s each), also where PYTHONDONTWRITEBYTECODE is set.
.venv/bin/python -m compileall -q moee_exp analysis benchmarks scripts run.py tests > /dev/null
