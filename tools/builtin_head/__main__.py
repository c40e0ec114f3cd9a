"""`python -m tools.builtin_head`: the same command line as scripts/make_builtin_head.py."""

import sys

from .cli import main

sys.exit(main(prog="python -m tools.builtin_head"))
