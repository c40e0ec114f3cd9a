"""Build the Blender extension: dist/next3d_blender-<version>.zip, validated.

    python build_addon.py [--out-dir dist] [--blender-ext PATH]

Steps:
1. Read blender_manifest.toml and check what Blender's validator does not: platform names, the version agreeing with
   core.__version__, the id naming the package folder.
2. Stage next3d_blender/ with real copies of core/ and addon_assets/ (in the repository they are symbolic links,
   so that the add-on imports the engine relatively in both layouts), the documentation (docs/*.md, without its
   images, into next3d_blender/docs/) and the manifest.
3. Build the zip with Blender's own extension CLI (`blender_ext.py build`, shipped inside the bpy wheel; no Blender
   binary needed), validate the zip (`blender_ext.py validate`, tags checked against Blender's list) and only then
   move it to its final name, so a failed build never leaves a zip behind.

Exit status 0 on success, 1 with a one-line reason otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parent
MANIFEST = ROOT / "blender_manifest.toml"
PACKAGE = ROOT / "next3d_blender"
VENDORED = ("core", "addon_assets")          # folders copied into the package
DOCS = ROOT / "docs"                         # its *.md files are copied into the package's docs/
VALID_PLATFORMS = ("windows-x64", "windows-arm64", "macos-x64", "macos-arm64", "linux-x64")
SKIP_NAMES = ("__pycache__", ".pytest_cache")
SKIP_SUFFIXES = (".pyc", ".pyo", ".zip")


class BuildError(Exception):
    """A reason the extension cannot be built, in one sentence."""


def read_manifest(path: Path = MANIFEST) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise BuildError(f"{path} does not exist.") from None
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{path} is not valid TOML: {exc}.") from None


def check_manifest(manifest: dict, core_version: Optional[str] = None) -> List[str]:
    """Our own checks, beyond Blender's validator. Returns the problems (empty when fine)."""
    problems = []
    platforms = manifest.get("platforms")
    if platforms is not None:
        if not isinstance(platforms, list) or not platforms:
            problems.append("'platforms' must be a non-empty list (or left out for every platform)")
        else:
            bad = [p for p in platforms if p not in VALID_PLATFORMS]
            if bad:
                problems.append(f"unknown platform names {bad}; Blender knows {', '.join(VALID_PLATFORMS)}")
    if manifest.get("id") != PACKAGE.name:
        problems.append(f"the manifest id {manifest.get('id')!r} must be {PACKAGE.name!r}, the package folder")
    version = manifest.get("version")
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+\.\d+", version):
        problems.append(f"the version {version!r} must be MAJOR.MINOR.PATCH")
    elif core_version is not None and version != core_version:
        problems.append(f"the manifest version {version} differs from core.__version__ {core_version}")
    perms = manifest.get("permissions") or {}
    if "files" not in perms:
        problems.append("the add-on writes files, so [permissions] must give a reason for 'files'")
    return problems


def core_version() -> str:
    text = (ROOT / "core" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        raise BuildError("core/__init__.py has no __version__.")
    return match.group(1)


def find_blender_ext() -> Path:
    """blender_ext.py inside the installed bpy wheel (found without importing bpy)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("The bpy module is not installed, so Blender's extension validator cannot be found; "
                         "install the pinned test requirements (pip install --no-deps -r requirements-dev.txt) or "
                         "pass --blender-ext.")
    for base in spec.submodule_search_locations:
        hits = sorted(Path(base).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if hits:
            return hits[-1]
    raise BuildError("The installed bpy has no scripts/addons_core/bl_pkg/cli/blender_ext.py; pass --blender-ext.")


def valid_tags_file(blender_ext: Path) -> Optional[Path]:
    """Blender's list of extension tags (scripts/modules/_bpy_internal/extensions/tags.py), when present."""
    scripts = blender_ext.parents[3]
    path = scripts / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    return path if path.is_file() else None


def _ignore(_dir: str, names: List[str]) -> List[str]:
    return [n for n in names if n in SKIP_NAMES or n.endswith(SKIP_SUFFIXES) or n.startswith(".")]


def stage(dest: Path) -> Path:
    """Copy the package (symbolic links resolved), the vendored folders, the documentation and the manifest into
    dest/<id>."""
    target = dest / PACKAGE.name
    target.mkdir(parents=True)
    for entry in sorted(PACKAGE.iterdir()):
        if entry.name in VENDORED or entry.name in SKIP_NAMES or entry.name.startswith("."):
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, ignore=_ignore)
        elif not entry.name.endswith(SKIP_SUFFIXES):
            shutil.copy2(entry, target / entry.name)
    for name in VENDORED:
        src = ROOT / name
        if not src.is_dir():
            raise BuildError(f"{src} is missing; it is vendored into the extension.")
        shutil.copytree(src, target / name, ignore=_ignore)
        # An empty folder would not reach the zip; keep it present for the code that looks for it.
        if not any((target / name).iterdir()):
            (target / name / "README.txt").write_text("Assets shipped with the extension.\n", encoding="utf-8")
    docs = sorted(DOCS.glob("*.md"))
    if not docs:
        raise BuildError(f"{DOCS} holds no .md files; the documentation ships with the extension.")
    (target / "docs").mkdir()
    for doc in docs:
        shutil.copy2(doc, target / "docs" / doc.name)
    shutil.copy2(MANIFEST, target / MANIFEST.name)
    return target


def _run_ext(blender_ext: Path, args: List[str]) -> None:
    proc = subprocess.run([sys.executable, str(blender_ext), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().replace("\n", " | ")
        raise BuildError(f"blender_ext {args[0]} failed: {out}")


def build(out_dir: Path = ROOT / "dist", blender_ext: Optional[Path] = None, quiet: bool = False) -> Path:
    """Build and validate the extension zip; returns its path."""
    manifest = read_manifest()
    problems = check_manifest(manifest, core_version())
    if problems:
        raise BuildError("blender_manifest.toml: " + "; ".join(problems) + ".")
    blender_ext = Path(blender_ext) if blender_ext else find_blender_ext()
    tags = valid_tags_file(blender_ext)
    tag_args = [f"--valid-tags={tags}"] if tags else []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / f"{manifest['id']}-{manifest['version']}.zip"
    with tempfile.TemporaryDirectory(prefix="next3d-build-") as tmp:
        source = stage(Path(tmp) / "stage")
        tmp_zip = Path(tmp) / final.name
        _run_ext(blender_ext, ["build", "--source-dir", str(source), "--output-filepath", str(tmp_zip), *tag_args])
        _run_ext(blender_ext, ["validate", *tag_args, str(tmp_zip)])
        fd, partial = tempfile.mkstemp(dir=out_dir, prefix=f".{final.stem}-", suffix=".zip")
        os.close(fd)
        try:
            shutil.copy(tmp_zip, partial)   # with its permissions: mkstemp would leave the zip 0600
            os.replace(partial, final)
        except BaseException:
            if os.path.exists(partial):
                os.unlink(partial)
            raise
    if not quiet:
        print(f"wrote {final} ({final.stat().st_size / 1e6:.1f} MB), validated by {blender_ext.name}")
    return final


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "dist")
    parser.add_argument("--blender-ext", type=Path, help="blender_ext.py to use (default: from the bpy wheel)")
    args = parser.parse_args(argv)
    try:
        build(args.out_dir, args.blender_ext)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
