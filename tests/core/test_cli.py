"""The `next3d` command line on a tiny model file: sequence mode of `render` (real processes interrupted with
SIGINT and SIGKILL, then resumed; a range split across two processes), `video`, `mesh`, argument errors, --help;
and the layout of core/cli (commands import only the shared modules; `import core.cli` loads no torch)."""

import ast
import importlib.util
import json
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
from core.sequence import frame_name

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


# ------------------------------------------------------------------------------------------------ hardening

def run_cli(args, file_size_limit=None, timeout=120):
    """The CLI in a child process; `file_size_limit` (bytes) makes every larger write fail as on a full disk (EFBIG,
    through RLIMIT_FSIZE: the child and its ffmpeg get an error from write(), as with ENOSPC)."""
    import resource

    def limit():
        if file_size_limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit)


def error_line(stderr):
    """The one line a refused command prints (progress and notes aside)."""
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr, stderr
    return lines[0]


def copy_frames(reference, folder, skip=()):
    folder.mkdir(parents=True)
    for name, data in reference.items():
        if name not in skip:
            (folder / name).write_bytes(data)


@pytest.fixture(scope="module")
def long_seq(files):
    """A sequence long enough (200 frames, about 40 s) to still be running while other commands try its folder."""
    v = np.load(files / "seq.npy")
    path = files / "long.npy"
    np.save(path, np.concatenate([v] * 13)[:200])
    return path


def test_a_second_render_into_a_busy_folder_is_refused_naming_the_first(files, long_seq, reference, tmp_path):
    out = tmp_path / "busy"
    first_args = sequence_args(files, out, "--no-video")
    first_args[first_args.index("--sequence") + 1] = str(long_seq)
    first = start_cli(first_args)
    try:
        wait_for_frames(first, out, 1)
        other_seed = sequence_args(files, out, "--no-video")
        other_seed[other_seed.index("--sequence") + 1] = str(long_seq)
        other_seed[other_seed.index("--seed") + 1] = "4"
        refused = run_cli(other_seed)
        line = error_line(refused.stderr)
        assert refused.returncode == 2 and "other settings (seed: 3 there, 4 now)" in line, line
        assert f"pid {first.pid}: next3d render" in line and "running now" in line, line
        refused = run_cli(other_seed + ["--overwrite"])   # --overwrite would replace the frames being rendered
        line = error_line(refused.stderr)
        assert refused.returncode == 2 and f"is in use (pid {first.pid}: next3d render" in line, line
        # The same settings share the folder: a split render joins and writes its own range.
        joined = run_cli(first_args + ["--frames", "190-191"])
        assert joined.returncode == 0 and "wrote 2 frames" in joined.stdout, joined.stderr
        assert first.poll() is None, "the first render should still be running"
    finally:
        first.send_signal(signal.SIGINT)
        stdout, stderr = first.communicate(timeout=60)
    assert first.returncode == 130, stderr
    assert json.loads((out / "next3d_sequence.json").read_text())["seed"] == 3
    alone = tmp_path / "alone"   # the same frames rendered with nobody else around: nothing was mixed in
    for frames in ("1-2", "190-191"):
        assert CliRunner().invoke(cli, first_args[:first_args.index("--out-dir") + 1] + [str(alone)] +
                                  first_args[first_args.index("--out-dir") + 2:] + ["--frames", frames]).exit_code == 0
    assert {name: frame_bytes(out)[name] for name in frame_bytes(alone)} == frame_bytes(alone)
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no lock file or temporary left


def test_two_videos_started_together_into_one_folder_one_is_refused(files, tmp_path):
    frames_dir = tmp_path / "frames"

    def video(seed, name):
        return start_cli(["video", "--model", str(files / "tiny.safetensors"), "--seeds", seed, "--frames", "300",
                          "--out", str(tmp_path / name), "--frames-dir", str(frames_dir), "--quiet", "--threads",
                          "1"])

    procs = [video("3", "a.mp4"), video("4", "b.mp4")]
    try:
        deadline = time.monotonic() + 90
        while all(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
        done = [p for p in procs if p.poll() is not None]
        assert len(done) == 1, "one of the two should have been refused"
        refused, running = done[0], next(p for p in procs if p is not done[0])
        stdout, stderr = refused.communicate()
        line = error_line(stderr)
        assert refused.returncode == 2 and f"is in use (pid {running.pid}: next3d video" in line, line
        wait_for_frames(running, frames_dir, 2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                p.communicate(timeout=60)
    record = json.loads((frames_dir / "next3d_sequence.json").read_text())
    assert record["seeds"] == [3 if running is procs[0] else 4]


def test_a_damaged_settings_record_is_refused_not_replaced(files, reference, tmp_path):
    out = tmp_path / "damaged"
    copy_frames(reference, out, skip={frame_name(N_FRAMES)})
    (out / "next3d_sequence.json").write_text('{"seed": 3, "camera": ')   # cut short
    result = CliRunner().invoke(cli, sequence_args(files, out))
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert "next3d_sequence.json is damaged (it is not valid JSON" in line and "Delete the folder" in line, line
    assert (out / "next3d_sequence.json").read_text() == '{"seed": 3, "camera": '
    assert not (out / frame_name(N_FRAMES)).exists() and not (out / "video.mp4").exists()
    (out / "next3d_sequence.json").write_text("[1, 2]")
    result = CliRunner().invoke(cli, sequence_args(files, out))
    assert result.exit_code == 2 and "not a record of settings" in result.output, result.output
    (out / "next3d_sequence.json").unlink()  # the fix the message gives, for frames known to be this render's
    result = CliRunner().invoke(cli, sequence_args(files, out))
    assert result.exit_code == 0 and frame_bytes(out) == reference, result.output


def test_a_truncated_frame_on_disk_is_rendered_again_on_resume(files, reference, tmp_path):
    out = tmp_path / "truncated"
    assert CliRunner().invoke(cli, sequence_args(files, out, "--frames", "1-1", "--no-video")).exit_code == 0
    for name, data in reference.items():
        (out / name).write_bytes(data)
    (out / frame_name(5)).write_bytes(reference[frame_name(5)][:len(reference[frame_name(5)]) // 2])
    broken = bytearray(reference[frame_name(9)])
    broken[len(broken) // 2] ^= 0xFF   # same size, one byte flipped
    (out / frame_name(9)).write_bytes(bytes(broken))
    result = CliRunner().invoke(cli, sequence_args(files, out))
    assert result.exit_code == 0, result.output
    assert "wrote 2 frames" in result.output and "2 damaged frames were rendered again" in result.output
    assert frame_bytes(out) == reference


def test_a_full_disk_while_encoding_leaves_no_video_and_exits_non_zero(files, reference, tmp_path):
    out = tmp_path / "full"
    copy_frames(reference, out)
    assert CliRunner().invoke(cli, sequence_args(files, out, "--no-video")).exit_code == 0  # the record
    video_size = (files / "reference" / "video.mp4").stat().st_size
    result = run_cli(sequence_args(files, out), file_size_limit=video_size // 2)
    line = error_line(result.stderr)
    assert result.returncode == 2 and f"Could not write the video {out / 'video.mp4'}" in line, result.stderr
    assert "frames are kept" in line and "run the same command again" in line, line
    assert not (out / "video.mp4").exists()
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert frame_bytes(out) == reference
    again = run_cli(sequence_args(files, out))   # space freed: the same command writes the video
    assert again.returncode == 0 and _video_frames(out / "video.mp4") == (N_FRAMES, (64, 64)), again.stderr


def test_a_full_disk_mid_render_keeps_the_whole_frames_and_says_how_to_resume(files, reference, tmp_path):
    out = tmp_path / "full_frames"
    missing = {frame_name(n) for n in range(9, N_FRAMES + 1)}
    copy_frames(reference, out, skip=missing)
    assert CliRunner().invoke(cli, sequence_args(files, out, "--frames", "1-1", "--no-video")).exit_code == 0
    smallest = min(len(reference[name]) for name in missing)
    result = run_cli(sequence_args(files, out), file_size_limit=smallest - 1)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "Could not write" in line and "File too large" in line, result.stderr
    assert f"Kept: 8 whole frames of 1-{N_FRAMES}" in line and "run the same command again to resume" in line, line
    assert set(frame_bytes(out)) == set(reference) - missing
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    again = run_cli(sequence_args(files, out))
    assert again.returncode == 0 and frame_bytes(out) == reference, again.stderr


def in_mount_namespace(script, timeout=180):
    """`script` run by sh in a private mount namespace: a tmpfs mounted there is a real file system (its size a real
    full disk, remounting it read-only a real read-only folder, for root too) that vanishes with the namespace."""
    import shutil

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("no private mount namespace here (it needs root, or user namespaces, and unshare)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(["unshare", "-m", "sh", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def render_on_tmpfs(files, long_seq, tmp_path, size, then=""):
    """The long render into a folder on a tmpfs of `size`; `then` runs once two frames are there (while the render
    goes on). Returns (exit code, stderr, the folder's files copied out)."""
    import shlex

    mount, err, copy = tmp_path / "mnt", tmp_path / "err.txt", tmp_path / "copy"
    mount.mkdir()
    args = sequence_args(files, mount / "o", "--no-video")
    args[args.index("--sequence") + 1] = str(long_seq)
    result = in_mount_namespace(f"""
        mount -t tmpfs -o size={size} tmpfs {mount} || exit 99
        {shlex.quote(sys.executable)} -m core.cli {shlex.join(args)} 2> {err} &
        pid=$!
        while [ "$(ls {mount}/o 2>/dev/null | grep -c '^frame_')" -lt 2 ] && kill -0 $pid 2>/dev/null; do
            sleep 0.02
        done
        {then}
        wait $pid
        echo "rc=$?"
        cp -a {mount}/o {copy}
        """)
    assert result.returncode == 0 and "rc=" in result.stdout, result.stderr
    return int(result.stdout.split("rc=")[1].split()[0]), err.read_text(), copy


def test_a_real_full_disk_mid_render_keeps_whole_frames_and_says_how_to_resume(files, long_seq, tmp_path):
    from core.io.images import png_is_whole

    code, stderr, copy = render_on_tmpfs(files, long_seq, tmp_path, "96k")
    line = error_line(stderr)
    assert code == 2 and "(No space left on device)" in line and "free some disk space" in line, stderr
    kept = sorted(copy.glob("frame_*.png"))
    assert f"Kept: {len(kept)} whole frames of 1-200" in line and "run the same command again to resume" in line
    assert kept and all(png_is_whole(p) for p in kept)
    assert not [p.name for p in copy.iterdir() if p.name.startswith(".") and p.name != ".next3d.lock"]


def test_a_folder_turned_read_only_mid_render_is_a_one_line_error(files, long_seq, tmp_path):
    code, stderr, copy = render_on_tmpfs(files, long_seq, tmp_path, "64m", then=f"mount -o remount,ro {tmp_path}/mnt")
    line = error_line(stderr)
    assert code == 2 and "(Read-only file system)" in line and "make the folder writable again" in line, stderr
    assert f"Kept: {len(list(copy.glob('frame_*.png')))} whole frames" in line
    assert not [p.name for p in copy.iterdir() if p.name.startswith(".frame_")]


def test_a_read_only_output_folder_is_refused_before_any_work(files, reference, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: a folder's permissions do not stop root's writes (the tmpfs test above "
                    "covers read-only folders for root)")
    out = tmp_path / "read_only"
    copy_frames(reference, out, skip={frame_name(N_FRAMES)})
    out.chmod(0o555)
    try:
        result = run_cli(sequence_args(files, out))
    finally:
        out.chmod(0o755)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "Cannot write to the output folder" in line, result.stderr


def test_running_out_of_memory_while_loading_names_the_file(tmp_path):
    """The bundled model (27 MB) read by `next3d info` with 8 MB of address space to spare."""
    code = ("import os, resource, sys\nimport torch, safetensors.torch\nfrom core.cli import main\n"
            "import core.io.generator_io, core.io.safetensors_format, core.io.official_pickle\n"
            "vm = int(open('/proc/self/statm').read().split()[0]) * os.sysconf('SC_PAGE_SIZE') + (8 << 20)\n"
            "resource.setrlimit(resource.RLIMIT_AS, (vm, vm))\n"
            "main.main(args=['info', 'addon_assets/default_model.safetensors'], prog_name='next3d')\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            capture_output=True, text=True, timeout=120)
    line = error_line(result.stderr)
    assert result.returncode == 2 and "Not enough memory to load 'addon_assets/default_model.safetensors'" in line


def test_temporaries_of_a_killed_run_are_removed_by_the_next_run(files, reference, tmp_path):
    out = tmp_path / "leftovers"
    copy_frames(reference, out, skip={frame_name(N_FRAMES)})
    assert CliRunner().invoke(cli, sequence_args(files, out, "--frames", "1-1", "--no-video")).exit_code == 0
    left = [".video-a1b2c3d4.mp4", f".{Path(frame_name(N_FRAMES)).stem}-x9y8z7w6.png",
            ".next3d_sequence-abcdefgh.json", ".video_00001-00004-qwertyui.mp4"]
    for name in left:
        (out / name).write_bytes(b"\0" * 100)   # just written: a killed run's files are recent too
    (out / ".my_notes.txt").write_text("not ours")
    result = CliRunner().invoke(cli, sequence_args(files, out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".my_notes.txt"]
    assert frame_bytes(out) == reference


@pytest.mark.parametrize("fps", ["1e308", "nan"])
def test_an_absurd_frame_rate_never_reaches_ffmpeg(files, tmp_path, fps):
    result = CliRunner().invoke(cli, sequence_args(files, tmp_path / "o", "--fps", fps))
    assert result.exit_code == 2, result.output
    line = error_line(result.output)
    assert "The video frame rate must be above 0 and at most 1000 frames per second" in line, line
    assert not list((tmp_path / "o").glob("frame_*.png"))


def test_usage_errors_are_one_line(files, tmp_path):
    result = CliRunner().invoke(cli, ["info", str(tmp_path / "none.pkl")])
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert "none.pkl does not exist" in error_line(result.output) and "info --help" in result.output
    result = CliRunner().invoke(cli, ["render", "--flame-model", str(tmp_path / "generic_model.pkl"), "--sequence",
                                      str(files / "seq.npy"), "--out-dir", str(tmp_path / "o")])
    assert result.exit_code == 2 and "Drop --flame-model" in error_line(result.output), result.output


def test_a_truncated_npz_is_a_one_line_error_naming_it(files, tmp_path):
    from core.flame.builtin_head import load_builtin_head_data   # a real FLAME-format .npz, cut short

    flame = tmp_path / "flame.npz"
    np.savez(flame, **{k: v for k, v in load_builtin_head_data().items() if isinstance(v, np.ndarray)})
    flame.write_bytes(flame.read_bytes()[:flame.stat().st_size // 2])
    vertices = tmp_path / "verts.npz"
    np.savez_compressed(vertices, v=np.load(files / "seq.npy"))
    vertices.write_bytes(vertices.read_bytes()[:-200])
    for args in (["render", "--flame-model", str(flame), "--out", str(tmp_path / "f.png")],
                 ["render", "--model", str(files / "tiny.safetensors"), "--sequence", str(vertices), "--out-dir",
                  str(tmp_path / "o")]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        line = error_line(result.output)
        assert ("flame.npz" in line or "verts.npz" in line) and "truncated or damaged" in line, line


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
