"""Performance capture (core/capture, `next3d track`): the landmark-only FLAME, the clip fit on exact landmarks, a
rendered driving video with a known animation tracked through mediapipe, and the bad inputs (not a video, no
face, a face leaving the picture, a variable frame rate, a truncated file, a folder with a blank frame).

The driving video is the built-in head rendered by the training data's renderer (core/capture/synthetic.py); the
figures on a 10-second clip are bench/track.py's (docs/capture.md#accuracy). The bounds here are loose: a short clip
at 256 pixels."""

import json
import math
import subprocess

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from core.capture.fit import FitOptions, fit_clip
from core.capture.landmark_flame import LandmarkFlame
from core.capture.metrics import compare_curves, jitter, motion_curves
from core.capture.synthetic import (clip_camera, known_performance, render_performance, true_points,
                                   write_clip_video)
from core.cli import main
from core.cli.group import Next3DGroup
from core.cli.track import track_command
from core.flame import FlameModel, load_model_data, load_sequence
from core.flame.builtin_head import BUILTIN_HEAD_PATH
from core.flame.params import FlameParams
from core.io.images import write_png
from core.portrait.fit import eye_vertex_indices

N, FPS, R = 40, 30.0, 256
# `next3d track` with the group's error handling (one line, exit code 2), as core/cli/__init__.py registers it.
CLI = Next3DGroup(commands=[track_command])


@pytest.fixture(scope="module")
def flame() -> FlameModel:
    return FlameModel(load_model_data(BUILTIN_HEAD_PATH))


@pytest.fixture(scope="module")
def performance():
    """A known animation: 16 still frames, then jaw, smile, brows, gaze and head turns at 2.5 times the bench's
    tempo, so that 40 frames show all of them."""
    return known_performance(N, FPS, still=0.4, tempo=2.5)


@pytest.fixture(scope="module")
def clip(performance):
    params, still = performance
    threads = torch.get_num_threads()
    torch.set_num_threads(1)      # small rasterizations: a second thread only adds synchronisation on 2 cores
    try:
        return render_performance(params, fps=FPS, still=still, resolution=R, supersample=1)
    finally:
        torch.set_num_threads(threads)


def _ffmpeg():
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def write_video(path, frames, fps=FPS, *extra):
    return write_clip_video(path, frames, fps, *extra)


@pytest.fixture(scope="module")
def clip_mp4(clip, tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", clip.frames)


def track(*args):
    return CliRunner().invoke(CLI, ["track", *map(str, args), "--quiet"])


# ------------------------------------------------------------------------------------------------ the model


def test_landmark_flame_is_flame_at_its_points(flame):
    """LandmarkFlame gives FlameModel's landmarks and vertices (global rotation applied), and its blend-shape
    derivatives are those of forward-mode differentiation."""
    from torch.func import jacfwd

    rims = eye_vertex_indices(flame).reshape(-1)
    model = LandmarkFlame(flame, rims, 100, 50)
    g = torch.Generator().manual_seed(0)
    b = 4
    p = FlameParams(shape=torch.randn(1, flame.n_shape, generator=g),
                    expression=torch.randn(b, flame.n_expr, generator=g), jaw=torch.rand(b, 3, generator=g) * 0.3,
                    neck=torch.randn(b, 3, generator=g) * 0.2, global_rotation=torch.randn(b, 3, generator=g) * 0.4,
                    eyes=torch.randn(b, 6, generator=g) * 0.2)
    want = flame(p, include_global_rotation=True)
    lmk, extra, dlmk, dextra = model(p.shape[:1], p.expression, p.full_pose(), blend_jacobian=True)
    torch.testing.assert_close(lmk[:, 17:], want.landmarks[:, 17:], atol=1e-6, rtol=0)
    torch.testing.assert_close(extra, want.vertices[:, rims], atol=1e-6, rtol=0)
    n_s = flame.n_shape
    for i in range(b):
        betas = torch.cat([p.shape[0], p.expression[i]])
        jac = jacfwd(lambda x: torch.cat(model(x[None, :n_s], x[None, n_s:], p.full_pose()[i:i + 1]), 1)[0])(betas)
        torch.testing.assert_close(dlmk[i], jac[:68], atol=1e-6, rtol=1e-4)
        torch.testing.assert_close(dextra[i], jac[68:], atol=1e-6, rtol=1e-4)


def test_fit_recovers_a_known_animation_from_exact_points(flame, performance):
    """Landmarks and irises projected from the known animation, without noise: the fit reproduces them to a
    fraction of a pixel and gives back the jaw, head and gaze. The camera's focal length is not known to the fit
    (it assumes FFHQ's), so the head's pitch trades against the face's shape by a constant of a few degrees."""
    params, still = performance
    _, landmarks, irises = true_points(flame, params, clip_camera(), R)
    fit = fit_clip(flame, landmarks, irises, np.ones(N, bool), FPS, FitOptions(smoothing=0.0))
    assert np.nanmean(fit.error_px) < 0.3 and np.nanmean(fit.iris_error_px) < 0.2
    truth, got = motion_curves(params), motion_curves(fit.params)
    for name, figures in compare_curves(truth, got).items():
        assert figures["corr"] > 0.99, (name, figures)
        limit = 4.0 if name == "head_pitch" else 1.0                  # degrees
        assert figures["mae"] < limit, (name, figures)
    assert fit.params.neck.abs().max() == 0
    np.testing.assert_allclose(fit.projected[:, 17:], landmarks[:, 17:], atol=1.5)


# ------------------------------------------------------------------------------------------------ a driving video


def test_track_a_rendered_video(flame, clip, performance, clip_mp4, tmp_path):
    """`next3d track clip.mp4`: mediapipe finds the rendered face in every frame; the animation follows the known
    jaw, head and gaze; the temporal terms make the still start stiller than fitting each frame alone; and
    `next3d render --sequence` plays the result."""
    params, still = performance
    out = tmp_path / "anim.npz"
    result = track(clip_mp4, "--out", out)
    assert result.exit_code == 0, result.output
    assert "1 face found" in result.output and f"wrote {out} ({N} frames at 30 fps" in result.output
    seq = load_sequence(out)
    assert seq.n_frames == N and seq.fps == FPS and seq.cameras is None
    assert float(seq.frames.neck.abs().max()) == 0 and float(seq.frames.global_rotation.abs().max()) > 0.2
    assert torch.equal(seq.frames.shape, seq.frames.shape[:1].expand(N, -1))       # one shape for the clip
    report = json.loads((tmp_path / "anim.track.json").read_text())
    assert report["frames_without_face"] == [] and report["face"] == 1 and len(report["faces"]) == 1
    assert report["landmark_error_px"]["mean"] < 3.0
    truth, got = motion_curves(params), motion_curves(seq.frames)
    figures = compare_curves(truth, got)
    for name, corr, mae in (("jaw", 0.85, 5), ("head_yaw", 0.9, 5), ("head_pitch", 0.8, 6), ("head_roll", 0.8, 4),
                            ("gaze_yaw", 0.6, 10)):
        assert figures[name]["corr"] > corr and figures[name]["mae"] < mae, (name, figures[name])

    # Each frame on its own: the still frames jitter more (measured up to 4 frames before the motion starts).
    alone = tmp_path / "alone.npz"
    assert track(clip_mp4, "--out", alone, "--smoothing", "0").exit_code == 0
    each = load_sequence(alone).frames
    quiet = slice(0, still - 4)

    def head(p):
        return np.stack([motion_curves(p)[k][quiet] for k in ("head_yaw", "head_pitch", "head_roll")], axis=1)

    assert jitter(head(seq.frames)) < 0.5 * jitter(head(each))
    assert jitter(seq.frames.expression[quiet].numpy()) < 0.5 * jitter(each.expression[quiet].numpy())

    frames = tmp_path / "frames"
    rendered = CliRunner().invoke(main, ["render", "--sequence", str(out), "--out-dir", str(frames), "--frames",
                                         "1-2", "--no-video", "--quiet"])
    assert rendered.exit_code == 0, rendered.output
    assert sorted(p.name for p in frames.glob("*.png")) == ["frame_00001.png", "frame_00002.png"]


# ------------------------------------------------------------------------------------------------ bad input


def test_what_is_not_a_video_with_a_face_is_refused(clip, clip_mp4, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    grey = write_video(tmp_path / "grey.mp4", np.full((12, 128, 128, 3), 120, np.uint8))
    cases = [((text,), "cannot be read as a video"), ((tmp_path / "missing.mp4",), "does not exist"),
             ((grey,), "No face was found in any of the 12 frames of grey.mp4"),
             ((clip_mp4, "--face", "2"), "There is no face 2 in clip.mp4 (frame 0): 1 face found")]
    for args, message in cases:
        out = tmp_path / "anim.npz"
        result = track(args[0], "--out", out, *args[1:])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert result.output.count("\n") <= 3 and "Traceback" not in result.output
        assert not out.exists()
    result = track(clip_mp4, "--out", tmp_path / "anim.txt")
    assert result.exit_code == 2 and "neither .npz nor .json" in result.output


def test_a_face_leaving_the_picture(clip, tmp_path):
    """The last 10 frames slide the head out to the left: they are named, and hold the last tracked pose."""
    frames = clip.frames.copy()
    for k, i in enumerate(range(N - 10, N)):
        shift = 40 + 20 * k
        frames[i, :, :R - shift] = frames[i, :, shift:]
        frames[i, :, R - shift:] = frames[i, 0, -1]
    out = tmp_path / "anim.json"
    result = track(write_video(tmp_path / "leaving.mp4", frames), "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "anim.track.json").read_text())
    gone = report["frames_without_face"]
    assert len(gone) == 1 and gone[0][1] == N - 1 and N - 9 <= gone[0][0] <= N - 3, gone
    assert f"No face in video frames {gone[0][0]}-{N - 1}" in result.output
    seq = load_sequence(out)
    assert seq.n_frames == N
    last = gone[0][0] - 1
    for name in ("expression", "jaw", "global_rotation", "eyes"):
        values = getattr(seq.frames, name)
        torch.testing.assert_close(values[last + 1:], values[last:last + 1].expand(N - last - 1, -1))


def test_a_variable_frame_rate_is_resampled(clip, performance, tmp_path):
    """Frames 20 on are shown for two frame times each (a phone's variable rate): the animation is resampled to
    an even 30 fps over the clip's real duration, says so, and keeps the timing."""
    params, _ = performance
    vfr = write_video(tmp_path / "vfr.mp4", clip.frames, FPS, "-vf", "setpts='if(lt(N,20),N,2*N-20)/30/TB'",
                      "-fps_mode", "passthrough")
    out = tmp_path / "anim.npz"
    result = track(vfr, "--out", out)
    assert result.exit_code == 0, result.output
    assert "variable frame rate" in result.output and "resampled to an even 30 fps" in result.output
    seq = load_sequence(out)
    assert seq.fps == FPS and seq.n_frames == 2 * N - 20 - 1          # the last frame is shown at (2N - 21) / 30 s
    report = json.loads((tmp_path / "anim.track.json").read_text())
    assert report["variable_frame_rate"] and report["video_frames"] == N
    # Animation frame 2k (k >= 10) is video frame 10 + k: the head yaw follows the video's timing.
    yaw = motion_curves(seq.frames)["head_yaw"]
    want = motion_curves(params)["head_yaw"]
    at = np.arange(20, 2 * N - 21, 2)
    assert np.abs(yaw[at] - want[(at + 20) // 2]).max() < 5


def test_a_truncated_video_keeps_what_was_read(clip, tmp_path):
    mkv = tmp_path / "clip.mkv"
    subprocess.run([_ffmpeg(), "-y", "-loglevel", "error", "-i", str(write_video(tmp_path / "c.mp4", clip.frames)),
                    "-c", "copy", str(mkv)], check=True, timeout=60)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(mkv.read_bytes()[:mkv.stat().st_size * 2 // 3])
    out = tmp_path / "anim.npz"
    result = track(cut, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"of the {N} frames its header announces" in result.output
    kept = load_sequence(out).n_frames
    assert 10 < kept < N and f"stopped decoding after {kept} " in result.output


def test_a_folder_of_images_with_a_blank_frame(clip, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(16, 28):
        pixels = np.full_like(clip.frames[i], 128) if i == 22 else clip.frames[i]
        write_png(folder / f"f_{i}.png", pixels)
    out = tmp_path / "anim.npz"
    result = track(folder, "--out", out, "--fps", "15")
    assert result.exit_code == 0, result.output
    assert "No face in video frame 6 (1 of 12)" in result.output
    seq = load_sequence(out)
    assert seq.fps == 15 and seq.n_frames == 12
    jaw = seq.frames.jaw[:, 0]
    assert math.isclose(float(jaw[6]), float(jaw[5] + jaw[7]) / 2, abs_tol=1e-5)     # interpolated


# ------------------------------------------------------------------------------------------------ ARKit


def test_a_live_link_face_recording(tmp_path):
    """A Live Link Face CSV (60 fps timecodes) becomes the built-in head's animation: named expressions, jaw, gaze
    from the eyeLook shapes, head pose from HeadYaw/HeadPitch/HeadRoll; `--fps 30` resamples it."""
    from core.capture.arkit import ARKIT_SHAPES, EXPRESSIONS, EYE_YAW, JAW_OPEN, ROTATIONS
    from core.capture.metrics import head_angles
    from core.flame.builtin_head import load_builtin_head_data
    from core.flame.params import eyes_to_gaze

    names = [str(n) for n in load_builtin_head_data()["expression_names"]]
    assert set(EXPRESSIONS) == set(names)
    assert {s for sources in EXPRESSIONS.values() for s in sources} <= set(ARKIT_SHAPES) and len(ARKIT_SHAPES) == 52
    n = 90
    header = ["Timecode", "BlendShapeCount", *(s[0].upper() + s[1:] for s in ARKIT_SHAPES), *ROTATIONS]
    lines = [",".join(header)]
    for i in range(n):
        row = dict.fromkeys(header[2:], 0.0)
        row["JawOpen"] = i / (n - 1)
        row["MouthSmileLeft"] = 1.0 if i >= 60 else 0.0
        row["HeadYaw"], row["HeadRoll"] = 0.3 * i / (n - 1), -0.1
        row["EyeLookOutLeft"] = row["EyeLookInRight"] = 1.0         # both eyes to the subject's left
        stamp = f"17:27:{34 + (21 + i) // 60:02d}:{(21 + i) % 60:02d}.000"
        lines.append(",".join([stamp, "61", *(f"{row[h]:.4f}" for h in header[2:])]))
    (tmp_path / "take.csv").write_text("\n".join(lines) + "\n")

    out = tmp_path / "anim.npz"
    result = track(tmp_path / "take.csv", "--out", out)
    assert result.exit_code == 0, result.output
    seq = load_sequence(out)
    assert seq.fps == 60 and seq.n_frames == n
    torch.testing.assert_close(seq.frames.jaw[:, 0], torch.linspace(0, 1, n) * JAW_OPEN, atol=1e-4, rtol=0)
    smile = seq.frames.expression[:, names.index("smile_left")]
    assert float(smile[:60].abs().max()) == 0 and float(smile[60:].min()) == 1
    angles = head_angles(seq.frames.global_rotation)
    np.testing.assert_allclose(angles[:, 0], np.linspace(0, 0.3, n), atol=1e-4)
    np.testing.assert_allclose(angles[:, 2], -0.1, atol=1e-4)
    left_yaw, _, right_yaw, _ = eyes_to_gaze(seq.frames.eyes)
    torch.testing.assert_close(left_yaw, torch.full((n,), EYE_YAW), atol=1e-4, rtol=0)
    torch.testing.assert_close(right_yaw, torch.full((n,), EYE_YAW), atol=1e-4, rtol=0)

    assert track(tmp_path / "take.csv", "--out", out, "--fps", "30").exit_code == 0
    assert load_sequence(out).n_frames == 45
    (tmp_path / "bad.csv").write_text("Timecode,JawOpen\n17:27:34:21.000,0.5\n")
    result = track(tmp_path / "bad.csv", "--out", tmp_path / "bad.npz")
    assert result.exit_code == 2 and "has no column EyeBlinkLeft, EyeBlinkRight, MouthSmileLeft" in result.output
