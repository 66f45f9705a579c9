"""Kept public path: `moee_exp.st` is `moee_exp.integrations.st` (the same module object)."""

import sys

from .integrations import st as _module

sys.modules[__name__] = _module
