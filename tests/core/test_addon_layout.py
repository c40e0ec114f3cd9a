"""The Blender extension's two halves, without Blender: only next3d_blender/blender/ imports bpy (the package's
__init__ only inside register/unregister), and what the worker process imports (the package and engine/) loads with
bpy and torch blocked. And the typed jobs survive their wire form (JSON) unchanged."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "next3d_blender"
BLENDER_ONLY = ("bpy", "bpy_extras", "mathutils", "addon_utils", "bmesh", "gpu")
# Every module of engine/, so a new one is checked too.
ENGINE_MODULES = ("next3d_blender", "next3d_blender.engine",
                  *(f"next3d_blender.engine.{p.stem}" for p in sorted((PACKAGE / "engine").glob("*.py"))
                    if p.stem != "__init__"))


def _sources():
    """The add-on's own modules (not the vendored core/ and addon_assets/, symbolic links in the repository)."""
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] not in ("core", "addon_assets"):
            yield path


def _blender_imports(tree: ast.AST, top_level_only: bool) -> list:
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found += [node.lineno for n in names if n.split(".")[0] in BLENDER_ONLY]
    return found


def test_only_the_blender_half_imports_bpy():
    offenders, blender_half = [], []
    for path in _sources():
        rel = path.relative_to(PACKAGE)
        tree = ast.parse(path.read_text(), str(path))
        if rel.parts[0] == "blender":
            blender_half.append(rel.name)
        elif rel == Path("__init__.py"):     # Blender calls register/unregister; the worker only imports it
            offenders += [f"{rel}:{line}" for line in _blender_imports(tree, top_level_only=True)]
        else:
            offenders += [f"{rel}:{line}" for line in _blender_imports(tree, top_level_only=False)]
    assert not offenders, f"only next3d_blender/blender/ may import Blender's modules: {offenders}"
    assert {"operators.py", "panels.py", "runner.py", "scene.py", "results.py"} <= set(blender_half)


def test_the_worker_side_imports_without_bpy_and_torch():
    code = ("import sys, importlib\nsys.modules['bpy'] = None\nsys.modules['torch'] = None\n"
            f"for name in {ENGINE_MODULES!r}:\n    importlib.import_module(name)\n"
            "from next3d_blender.engine.heads import HeadSpec, head_arrays, head_info\n"
            "arrays = head_arrays(HeadSpec())\n"
            "assert head_info(HeadSpec()) == (len(arrays['v_template']), arrays['shapedirs'].shape[2], "
            "arrays['exprdirs'].shape[2])\n"
            "print(sorted(m for m, v in sys.modules.items() if v is not None and m.split('.')[0] in "
            f"{('torch',) + BLENDER_ONLY!r}))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_jobs_survive_their_wire_form():
    from next3d_blender.core.errors import InputError
    from next3d_blender.engine.heads import HeadSpec
    from next3d_blender.engine.job_specs import InvertJob, MeshJob, ModelSpec, NeuralJob, PingJob, job_from_dict

    model = ModelSpec(source="project", path="/models/a.safetensors", device="cuda", precision="bf16")
    head = HeadSpec("flame", "/flame/generic_model.pkl", "/flame/landmark_embedding.npy")
    jobs = [PingJob(),
            NeuralJob(model=model, head=head, seed=3, side=256, frame_cache="/cache/frames", threads=2),
            NeuralJob(latent_path="/avatar/latent.npy", truncation_psi=0.5, sample_seed=7),
            MeshJob(model=model, resolution=48, level=12.5, sample_seed=7),
            InvertJob(head=head, image_path="/photo.png", out_dir="/avatar", latent_steps=3, tune_steps=2,
                      overwrite=True, vgg16_path="/vgg16.pth")]
    for job in jobs:
        wire = json.loads(json.dumps(job.to_dict()))
        assert wire["kind"] == job.kind
        assert job_from_dict(wire) == job
    # What a wire dict leaves out (or sends as null) takes the defaults; numbers take the field's type.
    job = job_from_dict({"kind": "neural", "side": 256.0, "seed": None, "extra": "ignored"})
    assert job == NeuralJob(side=256) and isinstance(job.side, int) and job.frame_cache == ""
    assert MeshJob(resolution=64.0).resolution == 64 and MeshJob().level is None
    with pytest.raises(InputError, match="'side' should be int"):
        job_from_dict({"kind": "neural", "side": "big"})
    with pytest.raises(InputError, match="Unknown job kind 'paint'"):
        job_from_dict({"kind": "paint"})
    with pytest.raises(InputError, match="'seed' should be int"):
        job_from_dict({"kind": "mesh", "seed": "one"})
