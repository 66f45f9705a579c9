"""Every exception a user may see, on the ground floor: each stage raises these and imports nothing else from here.

A user mistake (``USER_ERRORS``) reaches the user as one line, ``error: <what is wrong and the fix>`` (``error_line``),
never as a traceback: run.py, the embed CLI and the sweep preflight all print it that way.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A user mistake in the config: reported as one line, without a traceback."""


class MissingDependencyError(ConfigError):
    """A setting needs an optional dependency that is not installed: one line naming the setting and the install.

    A user mistake (the setting, or the install), unlike an ImportError of a module we always need, which is a bug
    and keeps its traceback."""


class ModelNotFoundError(OSError):
    """The checkpoint is neither a local dir nor reachable on the hub / in the HF cache."""


class NotAMoEModelError(ValueError):
    """The model has no MoE routers, so it has no routing weights (RW) to embed with."""


class UnsupportedRouterError(NotAMoEModelError):
    """A MoE model whose routers MoEE cannot read correctly: refused, never embedded with wrong RW."""


class NonFiniteFeatureError(ValueError):
    """NaN/inf or an all-zero vector in extracted features, naming the texts by their index in the encode call."""

    def __init__(self, feature: str, indices, desc: str | None = None, problem: str = "NaN/inf", sample: str = ""):
        self.feature, self.indices, self.desc, self.problem, self.sample = feature, list(indices), desc, problem, sample
        where = f" of {desc}" if desc else ""
        super().__init__(
            f"{feature} has {problem} for {len(self.indices)} text(s){where}, at text index "
            f"{self.indices[:10]}{' ...' if len(self.indices) > 10 else ''} (first: {sample[:80]!r}); "
            "try model.dtype=float32 or a shorter model.max_length"
        )

    def reindexed(self, positions) -> NonFiniteFeatureError:
        """The same error for texts that were a subset: ``positions[i]`` is subset text i's index in the whole."""
        return NonFiniteFeatureError(self.feature, [positions[i] for i in self.indices], self.desc, self.problem,
                                     self.sample)

    def __reduce__(self):  # picklable (submitit and joblib send a job's exception back to the launcher)
        return NonFiniteFeatureError, (self.feature, self.indices, self.desc, self.problem, self.sample)


class WriteError(OSError):
    """A file of the job could not be written: reported as one line naming the path and the fix."""

    def __str__(self) -> str:  # the message only, not OSError's "[Errno 28] ..."
        return str(self.strerror)


class LockWaitTimeout(TimeoutError):
    """A job waited ``cache.lock_wait_s`` for another job's extraction lock (reported as one line)."""


class ReadOnlyCacheError(OSError):
    """A job needs features that a read-only cache does not hold (reported as one line naming cache.dir)."""


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class DatasetUnavailableError(OSError):
    """A task's data is neither in the HF datasets cache nor reachable (offline, no network, gone from the hub)."""


USER_ERRORS = (ConfigError, ModelNotFoundError, NotAMoEModelError, NonFiniteFeatureError, UnknownTaskError,
               DatasetUnavailableError, ReadOnlyCacheError, WriteError, LockWaitTimeout)


def error_line(err: BaseException) -> str:
    """How a user mistake reaches the user: exactly one line, ``error: <what is wrong and the fix>``."""
    return "error: " + " ".join(str(err).split())
