"""The import rules the layout relies on, checked in fresh interpreters: core never imports bpy (so the engine runs
without Blender and the extension can vendor it), and core's numpy-only modules load without torch (so the Blender
side uses them instead of copies, and `next3d --help` stays fast)."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Modules that read and write numpy data only; the Blender process imports some of them.
NUMPY_ONLY = ("core.errors", "core.lazy_exports", "core.io.atomic", "core.io.restricted_pickle",
              "core.flame.model_data", "core.flame.official", "core.geometry.normals", "core.mesh.extracted",
              "core.mesh.export", "core.training.options", "core.cli.options", "core.flame.animation_json")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _core_modules():
    for path in sorted((ROOT / "core").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_core_source_imports_bpy():
    offenders = []
    for path in (ROOT / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno}" for n in names if n.split(".")[0] == "bpy"]
    assert not offenders, f"core must not import bpy: {offenders}"


def test_every_core_module_imports_with_bpy_blocked():
    modules = list(_core_modules())
    assert len(modules) > 50
    result = _run("import sys, importlib\nsys.modules['bpy'] = None\nfailed = []\n"
                  f"for name in {modules!r}:\n"
                  "    try:\n        importlib.import_module(name)\n"
                  "    except ImportError as exc:\n        failed.append(f'{name}: {exc}')\n"
                  "print('\\n'.join(failed))\nsys.exit(1 if failed else 0)")
    assert result.returncode == 0, result.stdout + result.stderr


def test_numpy_only_modules_import_without_torch():
    result = _run("import sys, importlib\nsys.modules['torch'] = None\n"
                  f"for name in {NUMPY_ONLY!r}:\n    importlib.import_module(name)\n"
                  "from core.flame import load_model_data, JOINT_NAMES\n"
                  "from core.mesh import save_mesh, ExtractedMesh\n"
                  "print(sorted(m for m, v in sys.modules.items()\n"
                  "             if v is not None and m.split('.')[0] in ('torch', 'bpy')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_package_faces_import_lazily():
    result = _run("import sys\nimport core.flame, core.io, core.mesh, core.sequence, core.portrait\n"
                  "assert 'torch' not in sys.modules\n"
                  "from core.flame import FlameModel\nassert 'torch' in sys.modules\n"
                  "import core.flame\nassert sorted(dir(core.flame)) == sorted(core.flame.__all__)\n"
                  "try:\n    core.flame.no_such_name\nexcept AttributeError as exc:\n    print(exc)")
    assert result.returncode == 0, result.stderr
    assert "has no attribute 'no_such_name'" in result.stdout
