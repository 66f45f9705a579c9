"""Kept public path: `moee_exp.mteb_model` is `moee_exp.integrations.mteb_model` (the same module object)."""

import sys

from .integrations import mteb_model as _module

sys.modules[__name__] = _module
