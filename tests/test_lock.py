"""The locked environment: what setup installs is exactly the lock, the lock pins what moves scores, the library
itself keeps ranges."""

import re
import runpy
from importlib.metadata import PackageNotFoundError, version

import pytest
from conftest import ROOT
from packaging.markers import Marker
from packaging.requirements import Requirement

LOCKS = ("run", "test")


def locked(name: str) -> dict[str, str]:
    """{package: version} of requirements/<name>.txt, for this platform and Python (markers evaluated)."""
    out = {}
    for line in (ROOT / "requirements" / f"{name}.txt").read_text(encoding="utf-8").splitlines():
        if not line or line[0] in " #":
            continue
        req, _, marker = line.rstrip(" \\").partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        pkg, _, ver = req.strip().partition("==")
        out[pkg.lower()] = ver
    return out


@pytest.mark.parametrize("name", LOCKS)
def test_lock_pins_every_package_with_hashes(name):
    text = (ROOT / "requirements" / f"{name}.txt").read_text(encoding="utf-8")
    entries = re.split(r"\n(?=[a-z0-9])", text.split("\n", 2)[2])
    assert len(entries) > 50
    for entry in entries:
        assert re.match(r"^[a-z0-9._-]+==\S+", entry), entry[:80]
        assert "--hash=sha256:" in entry, entry[:80]
    # what moves a score is pinned; torch is left to TORCH_SPEC (its build is the user's choice)
    pinned = locked(name)
    for pkg in ("transformers", "tokenizers", "mteb", "scikit-learn", "datasets", "numpy", "scipy", "bitsandbytes",
                "sentence-transformers", "hydra-core", "wandb"):
        assert pkg in pinned, pkg
    assert "torch" not in pinned and not [p for p in pinned if p.startswith("nvidia-")]


def test_run_lock_is_the_test_lock_without_the_test_tools():
    run, test = locked("run"), locked("test")
    assert {p: v for p, v in run.items()} == {p: test[p] for p in run}
    assert {"pytest", "hypothesis", "bertopic"} <= set(test) - set(run)


def test_installed_environment_is_the_test_lock():
    """What setup.sh installed is the lock, package for package (a floating install would fail here first)."""
    wrong = {}
    for pkg, ver in locked("test").items():
        try:
            have = version(pkg)
        except PackageNotFoundError:
            have = None
        if have != ver:
            wrong[pkg] = (ver, have)
    assert not wrong, f"installed != lock (package: (locked, installed)): {wrong}; run: bash scripts/setup.sh test"


def test_library_keeps_ranges_and_torch_is_the_locked_one():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every = deps["dependencies"] + [d for extra in deps["optional-dependencies"].values() for d in extra]
    assert not [d for d in every if "==" in d], "pyproject.toml is the library: ranges only (pins go in the lock)"
    setup = (ROOT / "scripts/setup.sh").read_text()
    torch_default = re.search(r"TORCH_SPEC:-torch==([0-9.]+)", setup).group(1)
    assert re.search(rf"TORCH_VERSION={re.escape(torch_default)}\b", (ROOT / "scripts/lock.sh").read_text())
    assert version("torch").split("+")[0] == torch_default
    assert Requirement(next(d for d in deps["dependencies"] if d.startswith("torch"))).specifier.contains(torch_default)


def test_lock_diff_names_the_changed_versions(tmp_path, capsys):
    old = tmp_path / "old.txt"
    text = (ROOT / "requirements/test.txt").read_text(encoding="utf-8")
    mteb = locked("test")["mteb"]
    old.write_text(text.replace(f"\nmteb=={mteb} ", "\nmteb==2.0.0 "), encoding="utf-8")
    lock_diff = runpy.run_path(str(ROOT / "scripts/lock_diff.py"), run_name="lock_diff")  # the script, not as __main__
    assert lock_diff["main"]([str(old), str(ROOT / "requirements/test.txt")]) == 0
    assert capsys.readouterr().out.strip() == f"mteb: 2.0.0 -> {mteb}"
