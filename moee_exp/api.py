"""Kept public path: `moee_exp.api` is `moee_exp.integrations.api` (the same module object)."""

import sys

from .integrations import api as _module

sys.modules[__name__] = _module
