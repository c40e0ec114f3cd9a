#!/usr/bin/env python3
"""Generate the built-in FLAME-format head (addon_assets/builtin_head.npz) procedurally.

The generator is the package tools/builtin_head (its docstring says how the head is made); this is its command
line, the same as `python -m tools.builtin_head`.

Usage:  python scripts/make_builtin_head.py [--out addon_assets/builtin_head.npz] [--preview [PNG]]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools.builtin_head.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
