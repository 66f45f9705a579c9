"""How a config schema checks itself: each field's own bounds and choices, read from its dataclass metadata.

Every schema (ModelConfig, EmbConfig, ...) subclasses ``Checked`` and names its config group; constructing it (which
``OmegaConf.to_object`` does for a composed config, and the API for its keywords) runs ``check_fields`` and then the
schema's own ``check`` for what one field's metadata cannot say. A mistake is a ConfigError naming ``group.key``, the
allowed values and the fix, raised before any model loads.

Field metadata: ``choices`` (a tuple, or a function returning one, for registries that grow such as emb kinds),
``min`` and ``max``. Every number is also bounded: beyond these a value is a typo, and it would overflow float32
embeddings (e.g. sqrt(alpha) * RW) or a torch / numpy int64 long after the model has loaded.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from .errors import ConfigError

MAX_FLOAT = 1e12
MAX_INT = 2**31 - 1


def choice(values, **metadata) -> dict:
    """Field metadata for a value that must be one of ``values`` (a tuple or a function returning one)."""
    return {"choices": values, **metadata}


def choices_of(f: dataclasses.Field) -> tuple | None:
    values = f.metadata.get("choices")
    return tuple(values() if callable(values) else values) if values is not None else None


def check_choice(value: Any, choices, key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not one of: {', '.join(map(str, choices))}")


def check_fields(obj, group: str) -> None:
    """Each field of dataclass ``obj``: within its choices, a finite number within its bounds; nested schemas too."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{group}.{f.name}"
        if dataclasses.is_dataclass(value):  # a nested group of fields (tasks.synthetic.*): one line each, full key
            check_fields(value, key)
            continue
        allowed = choices_of(f)
        if allowed is not None:
            check_choice(value, allowed, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value} is not a finite number: give a number such as {f.default!r}")
        low, high = f.metadata.get("min"), f.metadata.get("max", MAX_FLOAT if isinstance(value, float) else MAX_INT)
        if low is not None and value < low:
            raise ConfigError(f"{key}={value} must be >= {low} (default {f.default!r})")
        if abs(value) > high:
            raise ConfigError(f"{key}={value} is too large (at most {high:g}; default {f.default!r})")


class Checked:
    """A config schema that checks itself on construction (dataclass subclasses set ``group``)."""

    group: ClassVar[str] = ""

    def __post_init__(self) -> None:
        check_fields(self, self.group)
        self.check()

    def check(self) -> None:
        """What the fields' metadata cannot say (several fields together, a template's syntax)."""
