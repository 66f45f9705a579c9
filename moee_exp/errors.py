"""The exceptions that mean 'the user asked for something wrong' and are reported as one line."""

from .config import ConfigError
from .extract import NonFiniteFeatureError
from .loading import ModelNotFoundError
from .routers import NotAMoEModelError


class UnknownTaskError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


USER_ERRORS = (ConfigError, ModelNotFoundError, NotAMoEModelError, NonFiniteFeatureError, UnknownTaskError, ImportError)
