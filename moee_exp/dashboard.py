"""Kept public path: `moee_exp.dashboard` and `python -m moee_exp.dashboard` are `moee_exp.integrations.dashboard`."""

import sys

from .integrations import dashboard as _module

if __name__ == "__main__":
    sys.exit(_module.main())
sys.modules[__name__] = _module
