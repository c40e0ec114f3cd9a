"""The project's .safetensors checkpoint format: round trip, atomic writes, and clear errors."""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from core.errors import CheckpointError, InputError
from core.io import checkpoint_kind, load_checkpoint, save_checkpoint, stored_kind

CONFIG = {"z_dim": 512, "mapping_layers": 2, "orth_shift": [0.0, -0.01, -0.01], "name": "ffhq-512",
          "rendering": {"ray_start": 2.25, "ray_end": 3.3}, "sr": None}


def _state_dict() -> "OrderedDict[str, torch.Tensor]":
    g = torch.Generator().manual_seed(0)
    return OrderedDict([
        ("faces", torch.randint(0, 100, (1, 4, 3), generator=g)),
        ("backbone.mapping.w_avg", torch.randn(8, generator=g)),
        ("backbone.synthesis.b4.conv1.noise_strength", torch.tensor(0.5)),
        ("decoder.net.0.weight", torch.randn(4, 3, generator=g).t()),  # non-contiguous on purpose
    ])


def _extra() -> dict:
    return {"uv_face_mask": torch.ones(1, 1, 4, 4), "plane_axes": torch.eye(3).repeat(3, 1, 1)}


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_round_trip(tmp_path):
    sd, extra = _state_dict(), _extra()
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, sd, CONFIG, extra_tensors=extra)
    config, got, got_extra = load_checkpoint(path)
    assert config == CONFIG
    assert set(got) == set(sd) and set(got_extra) == set(extra)
    for name, ref in sd.items():
        assert got[name].dtype == ref.dtype and torch.equal(got[name], ref), name
    assert got["faces"].dtype == torch.int64 and got["backbone.synthesis.b4.conv1.noise_strength"].shape == ()
    for name, ref in extra.items():
        assert torch.equal(got_extra[name], ref)
    assert checkpoint_kind(path) == "next3d-safetensors"


def test_metadata_layout_is_readable_by_plain_safetensors(tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, _state_dict(), CONFIG, extra_tensors=_extra(), kind="next3d-generator")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta == {"format": "next3d-blender", "kind": "next3d-generator", "format_version": "1",
                    "config": json.dumps(CONFIG)}
    assert {"extra/uv_face_mask", "extra/plane_axes", "faces"} <= keys


def test_atomic_write_leaves_no_temp_files_and_overwrites(tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, _state_dict(), CONFIG)
    save_checkpoint(path, _state_dict(), {"second": True})
    assert _files(tmp_path) == ["model.safetensors"]
    assert load_checkpoint(path)[0] == {"second": True}


def test_failed_write_leaves_nothing_behind(tmp_path):
    # The final rename fails (the target is a folder) after the temp file was fully written.
    target = tmp_path / "model.safetensors"
    target.mkdir()
    with pytest.raises(CheckpointError, match="Cannot save"):
        save_checkpoint(target, _state_dict(), CONFIG)
    assert _files(tmp_path) == ["model.safetensors"] and target.is_dir() and not any(target.iterdir())


def test_tied_tensors_are_saved(tmp_path):
    w = torch.randn(3, 3)
    path = tmp_path / "tied.safetensors"
    save_checkpoint(path, {"a.weight": w, "b.weight": w, "c": w[0]}, CONFIG)
    _, sd, _ = load_checkpoint(path)
    assert torch.equal(sd["a.weight"], w) and torch.equal(sd["b.weight"], w) and torch.equal(sd["c"], w[0])


def test_bad_arguments(tmp_path):
    path = tmp_path / "m.safetensors"
    with pytest.raises(InputError, match="JSON"):
        save_checkpoint(path, _state_dict(), {"t": torch.ones(1)})
    with pytest.raises(InputError, match="reserved for extra tensors"):
        save_checkpoint(path, {"extra/x": torch.ones(1)}, CONFIG)
    with pytest.raises(InputError, match="not a torch.Tensor"):
        save_checkpoint(path, {"x": [1.0]}, CONFIG)
    with pytest.raises(CheckpointError, match="does not exist"):
        save_checkpoint(tmp_path / "no" / "m.safetensors", _state_dict(), CONFIG)
    assert not path.exists() and _files(tmp_path) == []


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found.*absent.safetensors"):
        load_checkpoint(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        checkpoint_kind(tmp_path / "absent.safetensors")


def test_not_safetensors(tmp_path):
    rand = tmp_path / "random.bin"
    rand.write_bytes(os.urandom(64) + bytes(range(256)))
    with pytest.raises(CheckpointError, match="not a .safetensors checkpoint"):
        load_checkpoint(rand)
    zipped = tmp_path / "model.pt"
    torch.save({"w": torch.ones(1)}, zipped)
    with pytest.raises(CheckpointError, match="zip archive.*torch.save"):
        load_checkpoint(zipped)
    pkl = tmp_path / "next3d_ffhq_512.pkl"
    pkl.write_bytes(pickle.dumps({"G_ema": None}, protocol=4))
    with pytest.raises(CheckpointError, match="Python pickle.*next3d convert"):
        load_checkpoint(pkl)


def test_safetensors_from_another_project(tmp_path):
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(1)}, str(plain))
    with pytest.raises(CheckpointError, match="another project.*no next3d-blender metadata"):
        load_checkpoint(plain)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(1)}, str(other), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="another project.*format 'pt'"):
        load_checkpoint(other)


def test_unknown_format_version(tmp_path):
    path = tmp_path / "future.safetensors"
    save_file({"w": torch.ones(1)}, str(path), metadata={"format": "next3d-blender", "kind": "next3d-generator",
                                                          "format_version": "2", "config": "{}"})
    with pytest.raises(CheckpointError, match="format_version '2'.*reads format_version '1'"):
        load_checkpoint(path)


def test_wrong_kind(tmp_path):
    path = tmp_path / "flame.safetensors"
    save_checkpoint(path, {"w": torch.ones(1)}, {}, kind="flame-model")
    with pytest.raises(CheckpointError, match="'flame-model' checkpoint, but a 'next3d-generator' checkpoint"):
        load_checkpoint(path)
    assert load_checkpoint(path, kind="flame-model")[0] == {}
    assert load_checkpoint(path, kind=None)[1]["w"].shape == (1,)


def test_damaged_config(tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.ones(1)}, str(path), metadata={"format": "next3d-blender", "kind": "next3d-generator",
                                                         "format_version": "1", "config": "{not json"})
    with pytest.raises(CheckpointError, match="damaged config"):
        load_checkpoint(path)


def test_truncated_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, {"w": torch.ones(1000)}, CONFIG)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 100])
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_checkpoint_kind(tmp_path):
    pkl = tmp_path / "a.pkl"
    pkl.write_bytes(pickle.dumps({}, protocol=4))
    assert checkpoint_kind(pkl) == "official-pickle"
    zipped = tmp_path / "b.pt"
    torch.save({}, zipped)
    assert checkpoint_kind(zipped) == "unknown"
    other = tmp_path / "c.safetensors"
    save_file({"w": torch.ones(1)}, str(other))
    assert checkpoint_kind(other) == "unknown"
    junk = tmp_path / "d.bin"
    junk.write_bytes(struct.pack("<Q", 10 ** 12) + b"{}")  # absurd header length
    assert checkpoint_kind(junk) == "unknown"
    empty = tmp_path / "e.bin"
    empty.write_bytes(b"")
    assert checkpoint_kind(empty) == "unknown"


def test_stored_kind_reads_the_kind_from_the_header_of_our_files_only(tmp_path):
    ours = tmp_path / "state.safetensors"
    save_checkpoint(ours, _state_dict(), CONFIG, kind="next3d-training-state")
    assert stored_kind(ours) == "next3d-training-state"
    generator = tmp_path / "generator.safetensors"
    save_checkpoint(generator, _state_dict(), CONFIG, kind="next3d-generator")
    assert stored_kind(generator) == "next3d-generator"
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.ones(1)}, str(other), metadata={"kind": "next3d-training-state"})
    assert stored_kind(other) is None        # another project's file, whatever its metadata says
    pkl = tmp_path / "a.pkl"
    pkl.write_bytes(pickle.dumps({}, protocol=4))
    assert stored_kind(pkl) is None
