"""Atomic writing (core/io/atomic.py and the writers that share its file mode): files appear whole or not at all,
and with the permissions of any new file (0o666 less the umask), not mkstemp's 0o600."""

import os
import stat

import numpy as np
import pytest
import torch

from core.io.atomic import atomic_write, new_file_mode, write_bytes_atomic
from core.io.images import write_png
from core.io.safetensors_format import save_checkpoint
from core.mesh.export import save_mesh
from core.mesh.extract import ExtractedMesh


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_files_get_the_umask_mode(tmp_path):
    want = 0o666 & ~_umask()
    assert new_file_mode() == want
    write_bytes_atomic(tmp_path / "a.bin", b"abc")
    write_png(tmp_path / "f.png", np.zeros((4, 4, 3), np.uint8))
    save_checkpoint(tmp_path / "m.safetensors", {"w": torch.zeros(2)}, {"name": "test"})
    mesh = ExtractedMesh(vertices=np.eye(3, dtype=np.float32), faces=np.array([[0, 1, 2]]), colors=None, level=0.0,
                         resolution=2)
    save_mesh(tmp_path / "m.ply", mesh)
    for name in ("a.bin", "f.png", "m.safetensors", "m.ply"):
        assert _mode(tmp_path / name) == want, name
    assert (tmp_path / "a.bin").read_bytes() == b"abc"


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_bytes(b"old")

    def broken(fh):
        fh.write(b"half")
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError, match="disk gone"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
