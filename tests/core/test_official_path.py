"""The official path end to end through the real `next3d` front end, with full-size stand-ins of the licensed files
(tools/official_standins: FLAME 2020's file layout at full size, both landmark embeddings, a FLAME 2023-style
pickle, and the narrow reference generator as an official network pickle): the README's commands, the embeddings
found beside the model or given, and every refusal (one line, exit 2, nothing written)."""

import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import flame_fixtures as ff  # tests/core is on sys.path (pytest puts a test file's folder there)
from core.cli import main as cli
from core.demo import demo_animation
from core.flame.animation import FlameSequence, save_sequence
from core.flame.builtin_head import load_builtin_head_data
from core.flame.files import load_flame_data
from core.flame.model import FlameModel
from core.flame.params import FlameParams
from tools.official_formats.flame_pickle import write_deca_embedding, write_dynamic_embedding, write_static_embedding

ROOT = Path(__file__).resolve().parents[2]
N_FRAMES = 2


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Converted FLAME models go to a folder of this test session, not the user's cache."""
    monkeypatch.setenv("NEXT3D_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "next3d_cache"))


@pytest.fixture(scope="module")
def standins(official_standins) -> dict:
    return {name: Path(p) for name, p in official_standins.items()}


@pytest.fixture(scope="module")
def anim(tmp_path_factory) -> Path:
    """The `make demo` animation, two frames: the jaw opens in the second."""
    path = tmp_path_factory.mktemp("anim") / "demo_animation.json"
    demo = demo_animation(26, 16, ["smile_left"], n_frames=6)
    return save_sequence(path, FlameSequence(frames=demo.frames[0:N_FRAMES], fps=demo.fps))


def run(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def frames(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("frame_*.png"))}


def one_line_error(result, *needles: str) -> str:
    """The command failed with exit 2 and one 'error:' line naming each needle."""
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


# ------------------------------------------------------------------------------------------------ the stand-ins

def test_standins_have_the_official_layout_and_reproduce_the_reference_landmarks(standins, reference_dir):
    data = load_flame_data(standins["generic_model.pkl"])
    assert (data.n_vertices, data.n_faces, data.n_shape, data.n_expr) == (5023, 9976, 300, 100)
    assert data.name == "FLAME2020" and data.has_dynamic_contour
    faces = np.load(reference_dir / "state_dict.npz")["faces"][0]
    assert np.array_equal(data.faces, faces)
    v = np.load(reference_dir / "case0.npz")["v"][0]
    out = FlameModel(data).mesh_input(FlameParams.zeros(1, 300, 100))[0].numpy()
    assert np.abs(out[:5023] - v[:5023]).max() < 1e-6
    assert np.abs(out[5023:] - v[5023:]).max() < 5e-4   # the reference landmarks are rounded to 0.1 mm
    pkl = standins["generic_model.pkl"].read_bytes()
    assert pkl[:2] == b"\x80\x02" and b"chumpy.ch\nCh\n" in pkl and b"scipy.sparse.csc\ncsc_matrix\n" in pkl
    assert b"chumpy" not in standins["flame2023.pkl"].read_bytes()


def test_standins_are_deterministic(standins, tmp_path):
    from tools.official_standins import write_standins

    again = write_standins(tmp_path, network=False)
    for name, path in again.items():
        assert path.read_bytes() == standins[name].read_bytes(), name


# ------------------------------------------------------------------------------------------------ the README

def readme_commands() -> list:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Using the official model", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("next3d ")]


# What the tests add to the README's commands so they run in seconds with the stand-ins.
FASTER = {"render": ["--frames", f"1-{N_FRAMES}", "--quiet"], "video": ["--seeds", "0", "--frames", "1", "--quiet"],
          "mesh": ["--resolution", "32", "--quiet"]}


def test_the_readme_walk_through_runs_with_the_standins(standins, anim, tmp_path):
    """Each command of 'Using the official model', with the stand-ins in place of the downloads."""
    commands = readme_commands()
    assert len(commands) >= 5 and all("next3d_ffhq_512.pkl" in c for c in commands)
    deca = tmp_path / "DECA" / "data"
    deca.mkdir(parents=True)
    (deca / "landmark_embedding.npy").write_bytes(standins["landmark_embedding.npy"].read_bytes())
    lone = tmp_path / "lone"          # a model folder without embeddings, for the --flame-landmarks command
    lone.mkdir()
    os.link(standins["generic_model.pkl"], lone / "generic_model.pkl")
    outputs = []
    for command in commands:
        args = shlex.split(command)[1:]
        if "--flame-landmarks" in args:
            args = [str(lone / "generic_model.pkl") if a == "FLAME2020/generic_model.pkl" else a for a in args]
        args = [a.replace("models/next3d_ffhq_512.pkl", str(standins["next3d_small.pkl"]))
                 .replace("FLAME2020/", f"{standins['generic_model.pkl'].parent}/")
                 .replace("DECA/data/", f"{deca}/").replace("out/demo_animation.json", str(anim)) for a in args]
        args = [str(tmp_path / a) if re.fullmatch(r"[\w.]+\.(png|mp4|glb)|\w+/", a) else a for a in args]
        if args[0] == "render" and "--sequence" not in args:
            extra = []
        elif "--flame-landmarks" in args:     # one frame is enough to compare with the other embedding's
            extra = ["--frames", "1-1", "--quiet"]
        else:
            extra = FASTER.get(args[0], [])
        if args[0] == "video":
            args = [a for i, a in enumerate(args) if a != "--seeds" and args[i - 1] != "--seeds"]
        result = run(*args, *extra)
        assert result.exit_code == 0, f"{command}\n{result.output}"
        outputs.append(result.output)
    assert (tmp_path / "neutral.png").is_file() and (tmp_path / "orbit.mp4").is_file()
    assert (tmp_path / "head.glb").stat().st_size > 1000
    # The embeddings beside the model (FLAME's pair): frames written, the jaw moves, the files recorded.
    written = frames(tmp_path / "frames")
    assert len(written) == N_FRAMES and len(set(written.values())) == N_FRAMES
    record = json.loads((tmp_path / "frames" / "next3d_sequence.json").read_text())
    assert record["model"] == str(standins["next3d_small.pkl"].resolve()) and record["weights"].startswith("sha256:")
    assert sorted(Path(p.split(" (")[0]).name for p in record["flame_landmarks"]) == [
        "flame_dynamic_embedding.npy", "flame_static_embedding.pkl"]
    # DECA's embedding, given explicitly, has the same 68 landmarks at zero yaw as FLAME's pair: the same frame.
    assert frames(tmp_path / "frames_deca") == {"frame_00001.png": written["frame_00001.png"]}
    record = json.loads((tmp_path / "frames_deca" / "next3d_sequence.json").read_text())
    assert record["flame_model"] == str(lone / "generic_model.pkl")
    assert [Path(p.split(" (")[0]).name for p in record["flame_landmarks"]] == ["landmark_embedding.npy"]


def test_flame_embeddings_given_explicitly_in_any_order(standins, anim, tmp_path):
    model = tmp_path / "elsewhere" / "generic_model.pkl"
    model.parent.mkdir()
    os.link(standins["generic_model.pkl"], model)
    out = tmp_path / "frames"
    result = run("render", "--model", standins["next3d_small.pkl"], "--flame-model", model,
                 "--flame-landmarks", standins["flame_dynamic_embedding.npy"],
                 "--flame-landmarks", standins["flame_static_embedding.pkl"],
                 "--sequence", anim, "--out-dir", out, "--frames", "1-1", "--quiet", "--no-video")
    assert result.exit_code == 0, result.output
    assert list(frames(out)) == ["frame_00001.png"]


def test_flame_2023_renders_with_a_note(standins, tmp_path):
    out = tmp_path / "f.png"
    result = run("render", "--model", standins["next3d_small.pkl"], "--flame-model", standins["flame2023.pkl"],
                 "--out", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and "note: FLAME 2023 has other shape and expression bases" in result.output


# ------------------------------------------------------------------------------------------------ refusals

def assert_nothing_written(folder: Path) -> None:
    assert not folder.exists() or not any(folder.iterdir()), list(folder.iterdir())


def test_a_flame_model_without_embeddings_names_the_files_and_the_folder(standins, anim, tmp_path):
    model = tmp_path / "FLAME2020" / "generic_model.pkl"
    model.parent.mkdir()
    os.link(standins["generic_model.pkl"], model)
    out = tmp_path / "frames"
    for args in (["--sequence", anim, "--out-dir", out], ["--out", out / "f.png"]):
        result = run("render", "--model", standins["next3d_small.pkl"], "--flame-model", model, *args)
        one_line_error(result, "No landmark embedding for generic_model.pkl", str(model.parent),
                       "landmark_embedding.npy", "flame_static_embedding.pkl + flame_dynamic_embedding.npy",
                       "--flame-landmarks")
        assert_nothing_written(out)
    (model.parent / "flame_static_embedding.pkl").write_bytes(standins["flame_static_embedding.pkl"].read_bytes())
    result = run("mesh", "--model", standins["next3d_small.pkl"], "--flame-model", model, "--out", out / "m.glb")
    one_line_error(result, "flame_static_embedding.pkl is there without its partner")
    result = run("render", "--model", standins["next3d_small.pkl"], "--flame-model", model,
                 "--flame-landmarks", standins["flame_static_embedding.pkl"], "--out", out / "f.png")
    one_line_error(result, "without the dynamic one", "flame_dynamic_embedding.npy")
    assert_nothing_written(out)


def _other_topology_embeddings(folder: Path, kind: str) -> list:
    """Official-format embeddings made for another head: the synthetic 40-vertex FLAME's (face indices that exist
    on FLAME but lie anywhere), or the built-in head's (indices past FLAME's 9976 faces)."""
    folder.mkdir()
    if kind == "synthetic":
        m = ff.make_synthetic_flame(seed=0)
        return [write_static_embedding(folder / "flame_static_embedding.pkl", m),
                write_dynamic_embedding(folder / "flame_dynamic_embedding.npy", m)]
    head = load_builtin_head_data()
    idx, bary = head["lmk_faces_idx"].astype(np.int64), head["lmk_bary_coords"].astype(np.float64)
    idx[20] = len(head["faces"]) - 1
    m = ff.SyntheticFlame(*[None] * 8, static_idx=idx[17:], static_bary=bary[17:],
                          dynamic_idx=np.tile(idx[:17], (79, 1)), dynamic_bary=np.tile(bary[:17], (79, 1, 1)),
                          full_idx=idx, full_bary=bary)
    return [write_deca_embedding(folder / "landmark_embedding.npy", m)]


@pytest.mark.parametrize("kind", ["synthetic", "builtin"])
def test_embeddings_of_another_topology_are_refused(standins, anim, tmp_path, kind):
    files = _other_topology_embeddings(tmp_path / "emb", kind)
    out = tmp_path / "frames"
    args = [a for f in files for a in ("--flame-landmarks", f)]
    result = run("render", "--model", standins["next3d_small.pkl"], "--flame-model", standins["generic_model.pkl"],
                 *args, "--sequence", anim, "--out-dir", out)
    one_line_error(result, "does not fit generic_model.pkl", "another head topology", "landmark_embedding.npy")
    assert_nothing_written(out)


def test_the_official_model_with_the_builtin_head_is_refused(standins, anim, tmp_path):
    out = tmp_path / "frames"
    result = run("render", "--model", standins["next3d_small.pkl"], "--sequence", anim, "--out-dir", out)
    one_line_error(result, "expects FLAME's topology (5023 vertices, 9976 triangles)",
                   "not the built-in head (5023 vertices, 10034 triangles)", "--flame-model generic_model.pkl")
    assert_nothing_written(out)
    result = run("video", "--model", standins["next3d_small.pkl"], "--out", out / "v.mp4")
    one_line_error(result, "--flame-model generic_model.pkl")
    assert_nothing_written(out)


def test_the_bundled_model_with_the_official_flame_is_refused(standins, anim, tmp_path):
    out = tmp_path / "frames"
    for command in (["render", "--sequence", anim, "--out-dir", out], ["mesh", "--out", out / "m.glb"],
                    ["video", "--out", out / "v.mp4"]):
        result = run(*command, "--flame-model", standins["generic_model.pkl"])
        one_line_error(result, "expects the built-in head (5023 vertices, 10034 triangles)",
                       "the FLAME model generic_model.pkl is FLAME's topology (5023 vertices, 9976 triangles)",
                       "leave out --flame-model")
        assert_nothing_written(out)


def _write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray, landmarks: np.ndarray) -> Path:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices] + [f"f {a + 1} {b + 1} {c + 1}"
                                                                      for a, b, c in faces]
    path.write_text("\n".join(lines) + "\n")
    np.savetxt(path.with_name(path.stem + "_kpt2d.txt"), landmarks)
    return path


def test_a_mesh_with_flames_vertex_count_but_other_faces_is_refused(standins, reference_dir, tmp_path):
    v = np.load(reference_dir / "case0.npz")["v"][0]
    faces = np.load(reference_dir / "state_dict.npz")["faces"][0]
    out = tmp_path / "out"
    good = _write_obj(tmp_path / "demo.obj", v[:5023], faces, v[5023:])
    result = run("mesh", "--model", standins["next3d_small.pkl"], "--mesh", good, "--resolution", "32", "--quiet",
                 "--out", out / "ok.ply")
    assert result.exit_code == 0, result.output
    other = faces.copy()
    other[:2, 0] = other[:2, 0][::-1]
    bad = _write_obj(tmp_path / "other.obj", v[:5023], other, v[5023:])
    builtin = load_builtin_head_data()
    head = _write_obj(tmp_path / "builtin.obj", builtin["v_template"], builtin["faces"], v[5023:])
    for mesh, needle in ((bad, "as many vertices and triangles but other ones"), (head, "is the built-in head")):
        for command in (["render", "--out", out / "f.png"], ["mesh", "--out", out / "m.ply"]):
            result = run(*command, "--model", standins["next3d_small.pkl"], "--mesh", mesh)
            one_line_error(result, f"the mesh {mesh.name}", needle, "expects FLAME's topology",
                           "give a mesh with the model's faces")
    drive = tmp_path / "drive"          # the official reenactment layout, one frame of the built-in head
    drive.mkdir()
    _write_obj(drive / "0001.obj", builtin["v_template"], builtin["faces"], v[5023:])
    result = run("render", "--model", standins["next3d_small.pkl"], "--sequence", drive, "--out-dir", out / "seq")
    one_line_error(result, "the mesh 0001.obj is the built-in head")
    assert sorted(p.name for p in out.iterdir()) == ["ok.ply"]


def test_flame_landmarks_without_a_flame_model_or_with_a_converted_one(standins, tmp_path):
    result = run("render", "--flame-landmarks", standins["landmark_embedding.npy"], "--out", tmp_path / "f.png")
    one_line_error(result, "--flame-landmarks goes with an official FLAME model")
    result = run("render", "--model", standins["next3d_small.pkl"], "--flame-model", standins["generic_model.pkl"],
                 "--flame-landmarks", standins["generic_model.pkl"], "--out", tmp_path / "f.png")
    one_line_error(result, "is not a FLAME landmark embedding")
    assert not (tmp_path / "f.png").exists()


def test_a_frame_from_an_animation_with_a_head_turn_folds_it_into_the_camera(standins, tmp_path):
    """`--mesh anim.json` renders the animation's first frame; its head rotation moves the camera (the mesh stays
    canonical), so the image differs from the same frame without the turn."""
    base = FlameParams.zeros(1, 0, 0)
    turned = base.replace(global_rotation=torch.tensor([[0.0, 0.4, 0.0]]))
    images = {}
    for name, params in (("still", base), ("turned", turned)):
        path = tmp_path / f"{name}.json"
        save_sequence(path, FlameSequence(frames=params, fps=8.0))
        result = run("render", "--model", standins["next3d_small.pkl"], "--flame-model",
                     standins["generic_model.pkl"], "--mesh", path, "--out", tmp_path / f"{name}.png")
        assert result.exit_code == 0, result.output
        images[name] = (tmp_path / f"{name}.png").read_bytes()
    assert images["still"] != images["turned"]
