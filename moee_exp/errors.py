"""The exceptions that mean 'the user asked for something wrong' and are reported as one line."""

from .cache import LockWaitTimeout, ReadOnlyCacheError
from .config import ConfigError
from .faults import WriteError
from .extract import NonFiniteFeatureError
from .loading import ModelNotFoundError
from .routers import NotAMoEModelError, UnsupportedRouterError  # noqa: F401 (a NotAMoEModelError)


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class DatasetUnavailableError(OSError):
    """A task's data is neither in the HF datasets cache nor reachable (offline, no network, gone from the hub)."""


USER_ERRORS = (ConfigError, ModelNotFoundError, NotAMoEModelError, NonFiniteFeatureError, UnknownTaskError, ImportError,
               DatasetUnavailableError, ReadOnlyCacheError,
               WriteError, LockWaitTimeout)


def error_line(err: BaseException) -> str:
    """How a user mistake reaches the user: exactly one line, ``error: <what is wrong and the fix>``."""
    return "error: " + " ".join(str(err).split())
