"""What identifies a model's feature values, computed without building or loading anything: the feature cache's
namespace key (moee_exp.features.featurize) and part of every result row's identity (moee_exp.jobs.resume).

A tiny model is named by its spec's hash, a local dir by a fingerprint of its files, a hub id by its id, revision and
the commit the HF cache resolved it to; with the dtype, quantization, device type and the torch / transformers
versions that produced the values.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from .loading import ModelConfig, model_config, resolve_device, resolve_dtype
from .tiny import spec_hash


# Every installed library that can move a score: the model's numbers (torch, transformers, tokenizers, bitsandbytes)
# and the scorer's (mteb and what its evaluators compute with). Recorded in each result row's identity and W&B config.
SCORE_LIBRARIES = (
    "torch", "transformers", "tokenizers", "bitsandbytes", "mteb", "scikit-learn", "numpy", "scipy", "datasets",
    "sentence-transformers",
)


@functools.cache  # read once per process: each lookup parses the package's metadata (~ms)
def package_version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def library_versions() -> dict[str, str | None]:
    """{package: installed version or None} for every library in SCORE_LIBRARIES."""
    return {name: package_version(name) for name in SCORE_LIBRARIES}


def _dir_fingerprint(path: Path) -> str:
    """Names, sizes and mtimes of a checkpoint dir's files: a retrained or replaced checkpoint gets a new key."""
    entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


hub_commits: dict[tuple, str | None] = {}


def hub_commit(repo_id: str, revision: str | None) -> str | None:
    """The commit a hub revision points to in the local HF cache (None if unknown), resolved once per process."""
    if revision and re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    key = (repo_id, revision)
    if key not in hub_commits:
        hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub"
        )
        ref = Path(hub) / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
        try:
            hub_commits[key] = ref.read_text().strip() or None
        except OSError:
            hub_commits[key] = None
    return hub_commits[key]


def model_identity(model: ModelConfig | Mapping) -> dict:
    """What identifies a model's feature values, computed without building or loading anything."""
    model = model_config(model)
    device = resolve_device(str(model.device or "auto"))
    ident = {
        "dtype": str(resolve_dtype(str(model.dtype or "auto"), device)),
        "quantization": str(model.quantization or "none"),
        "device_type": device.type,
        "trust_remote_code": bool(model.trust_remote_code),
        "revision": model.revision,
        # routers rounded through NF4 (protocol=paper): only recorded when on, so older keys stay valid
        **({"nf4_double_quant": True} if str(model.quantization) == "4bit" else {}),
        # fused experts in NF4 too (moee_exp.features.quant_experts): 4-bit features computed before differ
        **({"experts_nf4": True} if str(model.quantization) == "4bit" else {}),
        **({"quantize_routers": True} if model.quantize_routers and
           str(model.quantization or "none") != "none" else {}),
        "torch": package_version("torch"),
        "transformers": package_version("transformers"),
        "tokenizers": package_version("tokenizers"),  # the token ids every feature is computed from
    }
    if model.tiny:
        spec = dict(model.tiny)
        ident["model"] = f"tiny/{spec['model_type']}-{spec_hash(spec)}"  # the tiny dir's name: spec + tokenizer
        return ident
    name = str(model.name_or_path or "")
    local = Path(name).expanduser()
    if local.is_dir():
        ident["model"] = str(local.resolve())
        ident["files"] = _dir_fingerprint(local)
    else:
        ident["model"] = name
        ident["commit"] = hub_commit(name, model.revision)
    return ident
