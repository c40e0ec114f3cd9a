"""The command line shared by scripts/make_builtin_head.py and `python -m tools.builtin_head`: --out, --preview."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from .build import build, write
from .preview import render_preview

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "addon_assets" / "builtin_head.npz"
DEFAULT_PREVIEW = ROOT / "addon_assets" / "builtin_head_preview.png"
DESCRIPTION = "Generate the built-in FLAME-format head (addon_assets/builtin_head.npz) procedurally."


def main(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> int:
    ap = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .npz (default: %(default)s)")
    ap.add_argument("--preview", type=Path, nargs="?", const=DEFAULT_PREVIEW, default=None,
                    help="also write a preview PNG (default path: %(const)s)")
    args = ap.parse_args(argv)
    arrays = build()
    print(f"wrote {write(arrays, args.out)}: {arrays['v_template'].shape[0]} vertices, "
          f"{arrays['faces'].shape[0]} faces, {arrays['shapedirs'].shape[2]} shape and "
          f"{arrays['exprdirs'].shape[2]} expression components")
    if args.preview is not None:
        print(f"wrote {render_preview(arrays, args.preview)}")
    return 0
