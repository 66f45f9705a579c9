"""The exceptions that mean 'the user asked for something wrong' and are reported as one line."""

from .config import ConfigError
from .extract import NonFiniteFeatureError
from .loading import ModelNotFoundError
from .routers import NotAMoEModelError
from .tasks import UnknownTaskError

USER_ERRORS = (ConfigError, ModelNotFoundError, NotAMoEModelError, NonFiniteFeatureError, UnknownTaskError, ImportError)
