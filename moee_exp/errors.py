"""The exceptions that mean 'the user asked for something wrong' and are reported as one line."""

from .config import ConfigError
from .extract import NonFiniteFeatureError
from .loading import ModelNotFoundError
from .routers import NotAMoEModelError


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


USER_ERRORS = (ConfigError, ModelNotFoundError, NotAMoEModelError, NonFiniteFeatureError, UnknownTaskError, ImportError)


def error_line(err: BaseException) -> str:
    """How a user mistake reaches the user: exactly one line, ``error: <what is wrong and the fix>``."""
    return "error: " + " ".join(str(err).split())
