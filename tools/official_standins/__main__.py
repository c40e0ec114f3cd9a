"""`python -m tools.official_standins OUTDIR [--reference DIR] [--no-network]` from the repository root."""

import argparse
import sys
import time
from pathlib import Path

from . import DEFAULT_REFERENCE, ReferenceMissing, write_standins

ap = argparse.ArgumentParser(prog="python -m tools.official_standins",
                             description="Write full-size stand-ins of the official FLAME and Next3D files.")
ap.add_argument("out_dir", type=Path)
ap.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE,
                help="the next3d_small reference folder (default: %(default)s)")
ap.add_argument("--no-network", action="store_true", help="only the FLAME files, not next3d_small.pkl")
ap.add_argument("--flame2023", action="store_true", help="also flame2023.pkl (FLAME 2023's layout: no chumpy)")
args = ap.parse_args()
start = time.perf_counter()
try:
    paths = write_standins(args.out_dir, args.reference, network=not args.no_network, flame2023=args.flame2023)
except ReferenceMissing as exc:
    sys.exit(f"error: {exc}")
for name, path in paths.items():
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
print(f"done in {time.perf_counter() - start:.1f} s")
