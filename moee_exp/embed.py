"""Kept public path: `moee_exp.embed` and `python -m moee_exp.embed` are `moee_exp.integrations.embed`."""

import sys

from .integrations import embed as _module

if __name__ == "__main__":
    sys.exit(_module.main())
sys.modules[__name__] = _module
