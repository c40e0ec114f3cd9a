"""Sequence rendering in-process: cameras (the official orbit), frame sources, per-frame seeding, resume after a
stop, split ranges, settings guard, unwritable folders, and video files."""

import json
import math
import os
import signal

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from core.default_model import TINY_CONFIG, random_generator
from core.errors import InputError
from core.geometry.ellipsoid_head import ellipsoid_head
from core.rendering.camera import ffhq_camera
from core.sampling import latent_from_seed
from core.sequence import (FixedCamera, LabelCamera, MeshFolderSource, OrbitCamera, StaticMeshSource,
                           VertexArraySource, camera_track, frame_name, frame_seed, load_camera_labels,
                           parse_frame_range, render_sequence, settings_differ, write_video)
from core.sequence.render import SequenceInterrupted

TINY = TINY_CONFIG
N_FRAMES = 6


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: these tiny renders gain nothing from two, and lose a lot when other jobs share the cores."""
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def head():
    return ellipsoid_head()


@pytest.fixture(scope="module")
def generator(head):
    return random_generator(TINY, seed=5, head=head)


@pytest.fixture(scope="module")
def identity(generator):
    with torch.no_grad():
        return generator.make_identity(generator.mapping(latent_from_seed(1), ffhq_camera()[None],
                                                         truncation_psi=0.7, truncation_cutoff=14))


@pytest.fixture(scope="module")
def vertex_array(head):
    v = head.mesh_input()[0].numpy()
    return np.stack([v * (1 + 0.03 * math.sin(k)) for k in range(N_FRAMES)]).astype(np.float32)


def source_of(vertex_array):
    return VertexArraySource(vertex_array, OrbitCamera(len(vertex_array)))


def frame_bytes(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("frame_*.png"))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, generator, identity, vertex_array):
    """One uninterrupted render of the whole sequence, batch 1."""
    out = tmp_path_factory.mktemp("reference")
    result = render_sequence(generator, identity, source_of(vertex_array), out, progress=False, seed=3)
    assert result.written == list(range(1, N_FRAMES + 1)) and not result.interrupted
    return out


# ------------------------------------------------------------------------------------------------------ cameras

def official_look_at(h, v, radius=2.7, pivot=(0.0, 0.0, 0.2)):
    """EG3D's LookAtPoseSampler.sample + create_cam2world_matrix (docs/camera.md#look-at-cameras), in float64 numpy."""
    v = np.clip(v, 1e-5, math.pi - 1e-5)
    phi = math.acos(1 - 2 * v / math.pi)
    origin = np.array([radius * math.sin(phi) * math.cos(math.pi - h), radius * math.cos(phi),
                       radius * math.sin(phi) * math.sin(math.pi - h)])
    forward = np.asarray(pivot) - origin
    forward /= np.linalg.norm(forward)
    up = np.array([0.0, 1.0, 0.0])
    right = -np.cross(up, forward)
    right /= np.linalg.norm(right)
    up = np.cross(forward, right)
    up /= np.linalg.norm(up)
    m = np.eye(4)
    m[:3, :3] = np.stack([right, up, forward], -1)
    m[:3, 3] = origin
    return m


@pytest.mark.parametrize("n_frames,frame", [(240, 0), (240, 37), (240, 119), (240, 200), (7, 5)])
def test_orbit_camera_equals_the_official_gen_videos_formula(n_frames, frame):
    period = n_frames // 2  # Next3D halves gen_videos' keyframes * w_frames
    h = 3.14 / 2 + 0.35 * np.sin(2 * 3.14 * frame / period)
    v = 3.14 / 2 - 0.05 + 0.25 * np.cos(2 * 3.14 * frame / period)
    want = np.concatenate([official_look_at(h, v).reshape(-1), [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1]])
    got = OrbitCamera(n_frames).label(frame).double().numpy()
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_camera_labels_from_npy_and_dataset_json(tmp_path):
    labels = torch.stack([ffhq_camera(0.1 * k, -0.05 * k) for k in range(4)])
    np.save(tmp_path / "cams.npy", labels.numpy())
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"labels": [[f"img{k:08d}.png", labels[k].tolist()] for k in range(4)]}))
    for name in ("cams.npy", "dataset.json"):
        torch.testing.assert_close(load_camera_labels(tmp_path / name), labels)
    track = camera_track(tmp_path / "dataset.json", 4, smooth=True)
    torch.testing.assert_close(track.label(1), labels[:3].mean(0))
    torch.testing.assert_close(track.label(3), (labels[2] + 2 * labels[3]) / 3)
    with pytest.raises(InputError, match="has 4 frames but the sequence has 5"):
        track.check_length(5)
    (tmp_path / "bad.json").write_text(json.dumps({"labels": [["a", [1, 2, 3]]]}))
    with pytest.raises(InputError, match=r"label 0 .*\[name, \[25 floats\]\]"):
        load_camera_labels(tmp_path / "bad.json")
    torch.testing.assert_close(camera_track("fixed", 3, yaw=0.2).label(2), ffhq_camera(0.2))


# ------------------------------------------------------------------------------------------------ frame sources

def test_mesh_folder_source_reads_obj_and_kpt_pairs_in_natural_order(tmp_path, head):
    v = head.mesh_input()[0]
    for k in (10, 2, 1):
        verts = v[:5023] + 0.001 * k
        (tmp_path / f"{k}.obj").write_text("".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in verts.tolist()))
        np.savetxt(tmp_path / f"{k}_kpt2d.txt", v[5023:].numpy() + 0.001 * k)
    source = MeshFolderSource(tmp_path)
    assert len(source) == 3 and [source.index_to_number(i) for i in range(3)] == [1, 2, 3]
    assert source.mesh(2).shape == (5091, 3)
    torch.testing.assert_close(source.mesh(2), v + 0.010, atol=2e-6, rtol=0)  # 10.obj comes last
    (tmp_path / "11.obj").write_text("v 0 0 0\n")
    with pytest.raises(InputError, match="11.obj needs 11_kpt2d.txt"):
        MeshFolderSource(tmp_path)


def test_a_malformed_mesh_partway_through_keeps_the_frames_before_it(tmp_path, head, generator, identity):
    v = head.mesh_input()[0]
    folder = tmp_path / "drive"
    folder.mkdir()
    for k in (1, 2, 3):
        text = "".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in v[:5023].tolist())
        (folder / f"{k}.obj").write_text(text if k < 3 else text[:len(text) // 2] + "v 1 2 x\n")
        np.savetxt(folder / f"{k}_kpt2d.txt", v[5023:].numpy())
    with pytest.raises(InputError, match=r"3.obj, line \d+: expected numbers.*The 2 frames on disk are kept: fix the "
                                         r"file and run the same command again to resume"):
        render_sequence(generator, identity, MeshFolderSource(folder), tmp_path / "o", progress=False)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [frame_name(1), frame_name(2)]


def test_vertex_array_files_and_bad_shapes(tmp_path, vertex_array):
    np.save(tmp_path / "seq.npy", vertex_array)
    np.savez(tmp_path / "seq.npz", vertices=vertex_array[:, :5023], landmarks=vertex_array[:, 5023:])
    for name in ("seq.npy", "seq.npz"):
        source = VertexArraySource(tmp_path / name)
        assert len(source) == N_FRAMES and source.last_number == N_FRAMES
        np.testing.assert_array_equal(source.mesh(3).numpy(), vertex_array[3])
    np.save(tmp_path / "flat.npy", vertex_array[0])
    with pytest.raises(InputError, match=r"must be \[frames, 5091, 3\]"):
        VertexArraySource(tmp_path / "flat.npy")
    with pytest.raises(InputError, match="has 8 frames but the sequence has 3"):
        VertexArraySource(vertex_array[:3], LabelCamera(torch.zeros(8, 25)))


def test_parse_frame_range():
    assert parse_frame_range("100-199") == (100, 199) and parse_frame_range("7") == (7, 7)
    for bad in ("9-3", "a-b", "1-", "-4", "1:5", ""):
        with pytest.raises(InputError, match="--frames expects A-B with A <= B"):
            parse_frame_range(bad)


# ---------------------------------------------------------------------------------------------------- rendering

def test_each_frame_is_rendered_with_its_own_seeded_draws(generator, identity, vertex_array, reference):
    source = source_of(vertex_array)
    n = 5
    with torch.no_grad():
        out = generator.render_frame(identity, source.mesh(n - 1)[None], source.camera(n - 1)[None],
                                     generator=torch.Generator().manual_seed(frame_seed(3, n)))
    from core.io.images import to_uint8
    np.testing.assert_array_equal(iio.imread(reference / frame_name(n)), to_uint8(out.image[0]))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_stopped_render_resumes_with_only_the_missing_frames_byte_identical(tmp_path, generator, identity,
                                                                          vertex_array, reference, batch_size):
    calls = []
    stop_after = 2
    first = render_sequence(generator, identity, source_of(vertex_array), tmp_path, batch_size=batch_size, seed=3,
                            progress=False, should_stop=lambda: len(calls) >= stop_after,
                            on_frame=lambda n, p: calls.append((n, p.name)))
    assert first.interrupted and first.video is None
    assert len(first.written) >= stop_after and len(first.written) < N_FRAMES
    assert calls == [(n, frame_name(n)) for n in first.written]
    assert not list(tmp_path.glob(".*.png")) and not (tmp_path / "video.mp4").exists()
    on_disk = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("frame_*.png")}
    second = render_sequence(generator, identity, source_of(vertex_array), tmp_path, batch_size=batch_size,
                             seed=3, progress=False)
    assert second.skipped == first.written
    assert sorted(second.written + first.written) == list(range(1, N_FRAMES + 1))
    assert {name: tmp_path.joinpath(name).stat().st_mtime_ns for name in on_disk} == on_disk  # not rewritten
    got = frame_bytes(tmp_path)
    if batch_size == 1:
        assert got == frame_bytes(reference)
    else:  # another batch size may differ by float rounding; the same batch size uninterrupted must not
        uninterrupted = tmp_path.parent / f"{tmp_path.name}-whole"
        render_sequence(generator, identity, source_of(vertex_array), uninterrupted, batch_size=batch_size, seed=3,
                        progress=False, write_video=False)
        assert got == frame_bytes(uninterrupted)
    assert second.video == tmp_path / "video.mp4" and _video_props(second.video)[0] == N_FRAMES


def test_ctrl_c_in_process_stops_after_the_current_frame(tmp_path, generator, identity, vertex_array):
    previous = signal.getsignal(signal.SIGINT)
    with pytest.raises(SequenceInterrupted) as info:
        render_sequence(generator, identity, source_of(vertex_array), tmp_path, progress=False,
                        on_frame=lambda n, p: os.kill(os.getpid(), signal.SIGINT))
    result = info.value.result
    assert isinstance(info.value, KeyboardInterrupt) and result.interrupted
    assert result.written == [1] and result.missing == list(range(2, N_FRAMES + 1))
    assert "Run the same command again to resume" in str(info.value)
    assert signal.getsignal(signal.SIGINT) is previous
    assert sorted(p.name for p in tmp_path.iterdir()) == [frame_name(1)]


def test_a_range_split_in_two_gives_the_same_frames_and_then_the_whole_video(tmp_path, generator, identity,
                                                                           vertex_array, reference):
    a = render_sequence(generator, identity, source_of(vertex_array), tmp_path, frame_range=(1, 3), seed=3,
                        progress=False)
    assert a.written == [1, 2, 3] and a.video == tmp_path / "video_00001-00003.mp4"
    b = render_sequence(generator, identity, source_of(vertex_array), tmp_path, frame_range=(4, N_FRAMES),
                        seed=3, progress=False)
    assert b.written == list(range(4, N_FRAMES + 1)) and b.video == tmp_path / "video.mp4"
    assert frame_bytes(tmp_path) == frame_bytes(reference)
    with pytest.raises(InputError, match=r"outside the sequence, whose frames are numbered 1-6"):
        render_sequence(generator, identity, source_of(vertex_array), tmp_path, frame_range=(5, 7), progress=False)


def test_other_settings_in_the_same_folder_are_refused_unless_overwrite(tmp_path, generator, identity,
                                                                      vertex_array):
    source = VertexArraySource(vertex_array[:2])
    assert not settings_differ(tmp_path, {"seed": 1})  # nothing recorded yet
    render_sequence(generator, identity, source, tmp_path, progress=False, write_video=False,
                    settings={"seed": 1})
    assert not settings_differ(tmp_path, {"seed": 1}) and settings_differ(tmp_path, {"seed": 2})
    with pytest.raises(InputError, match=r"other settings \(seed: 1 there, 2 now\).*--overwrite"):
        render_sequence(generator, identity, source, tmp_path, progress=False, settings={"seed": 2})
    result = render_sequence(generator, identity, source, tmp_path, progress=False, write_video=False,
                             settings={"seed": 2}, overwrite=True)
    assert result.written == [1, 2]


def test_a_damaged_record_is_refused_and_replaced_only_with_overwrite(tmp_path, generator, identity, vertex_array):
    source = VertexArraySource(vertex_array[:2])
    render_sequence(generator, identity, source, tmp_path, progress=False, write_video=False, settings={"seed": 1})
    before = frame_bytes(tmp_path)
    for damage in (b'{"seed": 1', b"\xff\xfe", b"[" * 10_000 + b"]" * 10_000, b'"seed"'):
        (tmp_path / "next3d_sequence.json").write_bytes(damage)
        assert settings_differ(tmp_path, {"seed": 1})
        with pytest.raises(InputError, match=r"next3d_sequence.json is damaged .*Delete the folder to start over"):
            render_sequence(generator, identity, source, tmp_path, progress=False, settings={"seed": 1})
        assert frame_bytes(tmp_path) == before and (tmp_path / "next3d_sequence.json").read_bytes() == damage
    result = render_sequence(generator, identity, source, tmp_path, progress=False, write_video=False,
                             settings={"seed": 1}, overwrite=True)
    assert result.written == [1, 2] and json.loads((tmp_path / "next3d_sequence.json").read_text()) == {"seed": 1}


def test_only_whole_pngs_count_as_frames_on_disk(tmp_path, reference):
    from core.io.images import png_is_whole

    data = (reference / frame_name(2)).read_bytes()
    assert png_is_whole(reference / frame_name(2))
    cases = {"cut_in_half": data[:len(data) // 2], "no_iend": data[:-12], "one_byte_flipped":
             data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1:],
             "empty": b"", "not_png": b"GIF89a" + data[6:]}
    for name, damaged in cases.items():
        (tmp_path / name).write_bytes(damaged)
        assert not png_is_whole(tmp_path / name), name


def test_write_video_refuses_absurd_frame_rates_before_ffmpeg(tmp_path, reference):
    frames = sorted(reference.glob("frame_*.png"))
    for fps in (1e308, float("nan"), 0, -3, float("inf")):
        with pytest.raises(InputError, match="frame rate must be above 0 and at most 1000"):
            write_video(frames, tmp_path / "v.mp4", fps=fps)
    assert list(tmp_path.iterdir()) == []
    out = write_video(frames, tmp_path / "slow.mp4", fps=0.5)   # a fraction ffmpeg takes exactly (1/2)
    assert _video_props(out)[0] == N_FRAMES


def test_a_video_removes_the_temporaries_a_killed_encode_left_beside_it(tmp_path, reference):
    """Beside a video named by the user, other encodes may be running: only temporaries untouched for a minute go."""
    old, fresh, other = (tmp_path / ".clip-a1b2c3d4.mp4", tmp_path / ".clip-e5f6g7h8.mp4",
                         tmp_path / ".notes-a1b2c3d4.mp4")
    for p in (old, fresh, other):
        p.write_bytes(b"\0" * 64)
    os.utime(old, (os.path.getmtime(old) - 120,) * 2)
    os.utime(other, (os.path.getmtime(other) - 120,) * 2)
    write_video(sorted(reference.glob("frame_*.png")), tmp_path / "clip.mp4", fps=10)
    assert not old.exists() and fresh.exists() and other.exists()


def test_unwritable_output_folder_fails_before_any_work(tmp_path, generator, identity, vertex_array, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    calls = []
    monkeypatch.setattr(generator, "render_frame", lambda *a, **k: calls.append(1))
    with pytest.raises(InputError, match="Cannot write to the output folder"):
        render_sequence(generator, identity, source_of(vertex_array), blocker / "frames", progress=False)
    assert calls == []


def test_image_modes_and_per_frame_identity(tmp_path, generator, head):
    with torch.no_grad():
        ws = generator.mapping(torch.cat([latent_from_seed(0), latent_from_seed(1)]), ffhq_camera()[None].repeat(2, 1))
    source = StaticMeshSource(head.mesh_input(), 2, FixedCamera(), ws=lambda i: ws[i])
    for mode, side in (("image", 64), ("image_raw", 16), ("image_depth", 16)):
        out = tmp_path / mode
        render_sequence(generator, None, source, out, image_mode=mode, progress=False, write_video=False)
        a, b = iio.imread(out / frame_name(1)), iio.imread(out / frame_name(2))
        assert a.shape == (side, side, 3) and not np.array_equal(a, b)  # two avatars


# -------------------------------------------------------------------------------------------------------- video

def _video_props(path):
    import imageio_ffmpeg
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    frames = sum(1 for _ in reader)
    return frames, tuple(meta["size"]), meta["fps"]


def test_video_is_h264_with_even_sides_and_readable(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for k in range(5):
        p = tmp_path / frame_name(k + 1)
        iio.imwrite(p, rng.integers(0, 255, (33, 47, 3), dtype=np.uint8))
        paths.append(p)
    out = write_video(paths, tmp_path / "clip.mp4", fps=12)
    assert _video_props(out) == (5, (48, 34), 12.0)
    assert not list(tmp_path.glob(".clip-*"))
    with pytest.raises(InputError, match="missing"):
        write_video(paths + [tmp_path / "nope.png"], tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_sequence_video_has_every_frame(reference):
    assert _video_props(reference / "video.mp4")[:2] == (N_FRAMES, (64, 64))


# ------------------------------------------------------------------------------------------------ FLAME sources

class StubFlame:
    """Stands in for core.flame.FlameModel: the stand-in head, its jaw line moved by expression[0]."""

    def __init__(self, head):
        self.v = head.mesh_input()[0]

    def __call__(self, params):
        from core.flame.model import FlameOutput
        v = self.v.clone()
        v[:, 1] += 0.01 * params.expression[0, 0]
        joints = torch.tensor([[0.0, -0.05, -0.02]]).repeat(5, 1)[None]
        return FlameOutput(vertices=v[None, :5023], landmarks=v[None, 5023:], joints=joints)


def test_flame_animation_source_evaluates_frames_and_folds_the_head_pose_into_the_camera(tmp_path, head,
                                                                                       generator, identity):
    animation = pytest.importorskip("core.flame.animation")
    from core.flame.conversions import fold_head_pose_into_label
    from core.flame.params import FlameParams
    from core.sequence import sequence_source

    n = 3
    rotation = torch.zeros(n, 3)
    rotation[2, 1] = 0.3
    cams = torch.stack([ffhq_camera(0.05 * k) for k in range(n)])
    seq = animation.FlameSequence(FlameParams(expression=torch.linspace(0, 1, n)[:, None].repeat(1, 3),
                                              global_rotation=rotation), fps=25.0, cameras=cams)
    path = animation.save_sequence(tmp_path / "anim.npz", seq)
    with pytest.raises(InputError, match="--flame-model"):
        sequence_source(path)
    flame = StubFlame(head)
    source = sequence_source(path, flame=flame)
    assert len(source) == n and source.fps == 25.0 and source.has_own_cameras
    torch.testing.assert_close(source.mesh(1), flame(seq.frames[1]).mesh_input()[0])
    torch.testing.assert_close(source.camera(0), cams[0])
    folded = fold_head_pose_into_label(cams[2:], rotation[2:], pivot=torch.tensor([[0.0, -0.05, -0.02]]))[0]
    torch.testing.assert_close(source.camera(2), folded)
    assert not torch.allclose(source.camera(2), cams[2])
    result = render_sequence(generator, identity, source, tmp_path / "frames", progress=False, write_video=False)
    assert result.written == [1, 2, 3]
