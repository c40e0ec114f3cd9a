"""The `next3d` command line on a tiny model file: sequence mode of `render` (real processes interrupted with
SIGINT and SIGKILL, then resumed; a range split across two processes), `video`, `mesh`, argument errors, --help;
and the layout of core/cli (commands import only the shared modules; `import core.cli` loads no torch)."""

import ast
import importlib.util
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from core.cli import main as cli
from core.default_model import TINY_CONFIG, random_generator
from core.geometry.ellipsoid_head import ellipsoid_head
from core.io.generator_io import save_generator

ROOT = Path(__file__).resolve().parents[2]
TINY = TINY_CONFIG
N_FRAMES = 16


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread, as the subprocesses get (--threads 1): frames are byte-identical only for equal thread counts."""
    import torch
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny model saved as a normal checkpoint (no test-only code path in the CLI) and a vertex sequence."""
    root = tmp_path_factory.mktemp("cli")
    head = ellipsoid_head()
    save_generator(root / "tiny.safetensors", random_generator(TINY, seed=2, head=head))
    v = head.mesh_input()[0].numpy()
    np.save(root / "seq.npy", np.stack([v * (1 + 0.03 * math.sin(k / 2)) for k in range(N_FRAMES)]).astype(np.float32))
    return root


def sequence_args(files, out_dir, *extra):
    return ["render", "--model", str(files / "tiny.safetensors"), "--sequence", str(files / "seq.npy"),
            "--out-dir", str(out_dir), "--camera", "orbit", "--seed", "3", "--quiet", "--threads", "1", *extra]


def frame_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(Path(folder).glob("frame_*.png"))}


def temp_files(folder):
    return [p.name for p in Path(folder).iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def reference(files):
    """An uninterrupted render of the whole sequence, in-process."""
    out = files / "reference"
    result = CliRunner().invoke(cli, sequence_args(files, out))
    assert result.exit_code == 0, result.output
    assert len(frame_bytes(out)) == N_FRAMES and (out / "video.mp4").is_file()
    return frame_bytes(out)


def start_cli(args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_frames(proc, folder, count, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(Path(folder).glob("frame_*.png"))) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"the render ended before {count} frames appeared: {proc.communicate()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail("no frames appeared in time")


def test_ctrl_c_stops_cleanly_with_exit_130_and_the_resume_is_byte_identical(files, reference):
    out = files / "sigint"
    proc = start_cli(sequence_args(files, out, "--no-video"))
    wait_for_frames(proc, out, 1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Run the same command again" in stderr and "to resume" in stderr
    written = frame_bytes(out)
    assert 1 <= len(written) < N_FRAMES, "the render should have stopped early"
    assert temp_files(out) == [], "no partial or temporary file may be left"
    assert all(reference[name] == data for name, data in written.items())
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("frame_*.png")}
    result = CliRunner().invoke(cli, sequence_args(files, out, "--no-video"))
    assert result.exit_code == 0, result.output
    assert f"{len(before)} of frames 1-{N_FRAMES} were already there" in result.output
    assert {name: (out / name).stat().st_mtime_ns for name in before} == before  # only missing frames written
    assert frame_bytes(out) == reference


def test_killed_render_resumes_in_a_new_process(files, reference):
    out = files / "sigkill"
    proc = start_cli(sequence_args(files, out))
    wait_for_frames(proc, out, 2)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = len(frame_bytes(out))
    assert done < N_FRAMES
    proc = start_cli(sequence_args(files, out))
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert f"wrote {N_FRAMES - done} frames" in stdout
    assert frame_bytes(out) == reference and (out / "video.mp4").is_file()


def test_a_range_split_across_two_processes_equals_one_run(files, reference):
    out = files / "split"
    half = N_FRAMES // 2
    procs = [start_cli(sequence_args(files, out, "--frames", f"1-{half}")),
             start_cli(sequence_args(files, out, "--frames", f"{half + 1}-{N_FRAMES}"))]
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
    assert frame_bytes(out) == reference
    assert (out / "video.mp4").is_file()  # written by whichever process completed the sequence
    assert not [n for n in temp_files(out) if n.endswith(".png")]


def test_sequence_errors_name_the_argument_and_the_fix(files, tmp_path):
    runner = CliRunner()
    for bad, message in (("9-3", "--frames expects A-B with A <= B, got '9-3'"),
                         ("x", "--frames expects A-B with A <= B"),
                         (f"20-{N_FRAMES + 5}", f"outside the sequence, whose frames are numbered 1-{N_FRAMES}")):
        result = runner.invoke(cli, sequence_args(files, tmp_path / "o", "--frames", bad))
        assert result.exit_code == 2 and message in result.output and "--frames" in result.output, result.output
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    start = time.perf_counter()
    result = runner.invoke(cli, sequence_args(files, blocker / "frames"))
    assert result.exit_code == 2 and "Cannot write to the output folder" in result.output
    assert time.perf_counter() - start < 5  # before loading the model
    result = runner.invoke(cli, ["render", "--out", str(tmp_path / "f.png"), "--frames", "1-2"])
    assert result.exit_code == 2 and "--frames applies to sequences only" in result.output
    result = runner.invoke(cli, sequence_args(files, tmp_path / "o", "--camera", str(tmp_path / "none.npy")))
    assert result.exit_code == 2 and "--camera" in result.output and "does not exist" in result.output
    result = runner.invoke(cli, ["render", "--sequence", str(tmp_path / "nothing"), "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--sequence" in result.output and "does not exist" in result.output
    result = runner.invoke(cli, ["video", "--seeds", "3-1", "--out", str(tmp_path / "v.mp4")])
    assert result.exit_code == 2 and "--seeds expects" in result.output


def test_weights_replaced_in_place_are_not_mixed_with_frames_of_the_old_ones(files, tmp_path):
    """A model retrained under the same file name (same size, other weights) must not resume the old frames."""
    model = tmp_path / "model.safetensors"
    model.write_bytes((files / "tiny.safetensors").read_bytes())
    args = sequence_args(files, tmp_path / "o", "--frames", "1-2", "--no-video")
    args[args.index("--model") + 1] = str(model)
    runner = CliRunner()
    assert runner.invoke(cli, args).exit_code == 0
    old = frame_bytes(tmp_path / "o")
    save_generator(model, random_generator(TINY, seed=5, head=ellipsoid_head()))
    assert model.stat().st_size == (files / "tiny.safetensors").stat().st_size
    result = runner.invoke(cli, args)
    assert result.exit_code != 0 and "other settings" in result.output and "--overwrite" in result.output, \
        result.output
    assert frame_bytes(tmp_path / "o") == old  # nothing was touched
    result = runner.invoke(cli, args + ["--overwrite"])
    assert result.exit_code == 0, result.output
    assert set(frame_bytes(tmp_path / "o")) == set(old) and frame_bytes(tmp_path / "o") != old


def _video_frames(path):
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return sum(1 for _ in reader), tuple(meta["size"])


@pytest.mark.parametrize("seeds,frames,total", [("0", 3, 3), ("0-1", 1, 2)])
def test_video_command_writes_an_orbit_video(files, tmp_path, seeds, frames, total):
    out = tmp_path / "orbit.mp4"
    result = CliRunner().invoke(cli, ["video", "--model", str(files / "tiny.safetensors"), "--seeds", seeds,
                                      "--frames", str(frames), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert _video_frames(out) == (total, (64, 64))
    assert not (tmp_path / "orbit_frames").exists()  # frames removed once the video is written


def test_mesh_command(files, tmp_path):
    out = tmp_path / "head.ply"
    result = CliRunner().invoke(cli, ["mesh", "--model", str(files / "tiny.safetensors"), "--resolution", "32",
                                      "--level", "0.5", "--out", str(out)])
    if importlib.util.find_spec("core.mesh") is None:
        assert result.exit_code == 2 and "Mesh extraction is not available" in result.output
    else:
        assert result.exit_code == 0, result.output
        assert out.is_file() and out.stat().st_size > 0 and "vertices" in result.output


@pytest.mark.parametrize("command", [None, "info", "convert", "render", "video", "mesh", "demo"])
def test_every_command_has_help_with_an_example(command):
    result = CliRunner().invoke(cli, ([command] if command else []) + ["--help"])
    assert result.exit_code == 0
    assert "Example: next3d " in result.output


def test_demo_renders_again_when_its_folder_holds_frames_of_other_settings(tmp_path):
    """`make demo` after a change (another seed here; a new bundled model in practice) re-renders rather than
    refusing or keeping the old frames; the same settings skip the frames already there."""
    runner = CliRunner()
    first = runner.invoke(cli, ["demo", "--out", str(tmp_path), "--frames", "2", "--seed", "0"])
    assert first.exit_code == 0, first.output
    old = frame_bytes(tmp_path / "frames")
    again = runner.invoke(cli, ["demo", "--out", str(tmp_path), "--frames", "2", "--seed", "0"])
    assert again.exit_code == 0 and "2 of frames 1-2 were already there" in again.output, again.output
    other = runner.invoke(cli, ["demo", "--out", str(tmp_path), "--frames", "2", "--seed", "1"])
    assert other.exit_code == 0 and "rendering them again" in other.output and "wrote 2 frames" in other.output, \
        other.output
    assert set(frame_bytes(tmp_path / "frames")) == set(old) and frame_bytes(tmp_path / "frames") != old


def test_a_shorter_demo_removes_the_frames_past_its_end(tmp_path):
    """The demo's folder holds only the demo's own frames: after a 3-frame demo, a 2-frame one leaves no frame 3."""
    runner = CliRunner()
    longer = runner.invoke(cli, ["demo", "--out", str(tmp_path), "--frames", "3"])
    assert longer.exit_code == 0, longer.output
    assert sorted(frame_bytes(tmp_path / "frames")) == ["frame_00001.png", "frame_00002.png", "frame_00003.png"]
    shorter = runner.invoke(cli, ["demo", "--out", str(tmp_path), "--frames", "2"])
    assert shorter.exit_code == 0 and "rendering them again" in shorter.output, shorter.output
    assert sorted(frame_bytes(tmp_path / "frames")) == ["frame_00001.png", "frame_00002.png"]


# ------------------------------------------------------------------------------------------------ core/cli layout

SHARED = ("core.cli.options", "core.cli.loaders", "core.cli.group")  # what every command module may import


def _imported_modules(path):
    """The absolute names of the modules a source file imports (relative imports resolved; for `from . import x`,
    the package and x)."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    package = parts[:-1]  # the module's package (for __init__.py, its own)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(filter(None, [base, node.module]))
            yield module
            yield from (f"{module}.{a.name}" for a in node.names)


def test_command_modules_import_only_the_shared_modules():
    offenders = []
    for path in sorted((ROOT / "core" / "cli").glob("*.py")):
        if path.stem in ("__init__", "__main__"):
            continue  # they assemble and run the group
        for name in _imported_modules(path):
            shared = name in SHARED or name.startswith(tuple(f"{m}." for m in SHARED))
            if name.startswith("core.cli") and not shared:
                offenders.append(f"{path.name} imports {name}")
    assert not offenders, offenders


def test_commands_live_in_core_cli_only():
    assert [p.relative_to(ROOT).as_posix() for p in (ROOT / "core").rglob("cli.py")] == []
    offenders = [f"{path.relative_to(ROOT)} imports {name}" for path in (ROOT / "core").rglob("*.py")
                 if "cli" not in path.relative_to(ROOT / "core").parts[:1]
                 for name in _imported_modules(path) if name == "core.cli" or name.startswith("core.cli.")]
    assert not offenders, offenders


def test_the_command_line_loads_without_torch():
    """`next3d --help` stays fast: the group and every command's options load no engine module (the training
    options come from the torch-free core/training/options.py)."""
    code = ("import sys\nfrom click.testing import CliRunner\nfrom core.cli import main\n"
            "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
            "for name in sorted(main.commands):\n"
            "    assert CliRunner().invoke(main, [name, '--help']).exit_code == 0, name\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
