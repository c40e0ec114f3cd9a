"""The restricted reader of official Next3D network pickles (docs/checkpoint_formats.md), on files written opcode by
opcode."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import re
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import CheckpointError
from core.io import describe_official_pickle, load_official_pickle
from core.io.official_pickle import _NetworkUnpickler, _to_plain

try:
    from . import official_pickle_writer as w
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import official_pickle_writer as w

REFUSED = "not a Next3D network pickle or may be malicious"

pytestmark = pytest.mark.skipif(not os.path.exists(w.SPEC_KEYS),
                                reason=f"official key list not found at {w.SPEC_KEYS} (set NEXT3D_SPEC_STATE_DICT)")


@pytest.fixture(scope="module")
def tiny():
    sd, buffers = w.tiny_official_state_dict(seed=0)
    return sd, buffers


@pytest.fixture(scope="module")
def official_file(tmp_path_factory, tiny):
    """A full official-layout pickle with CUDA-located storages, shared by the read-only tests."""
    sd, buffers = tiny
    path = tmp_path_factory.mktemp("official") / "next3d_ffhq_512.pkl"
    w.write_official_pickle(path, sd, buffers, w.official_init_kwargs(), w.official_attributes(),
                            storage_location="cuda:0")
    return path


@pytest.fixture(scope="module")
def loaded(official_file):
    return load_official_pickle(official_file)


def write(tmp_path: Path, tiny, name: str = "g.pkl", **kw) -> Path:
    sd, buffers = tiny
    path = tmp_path / name
    kw.setdefault("init_kwargs", w.official_init_kwargs())
    kw.setdefault("attributes", w.official_attributes())
    w.write_official_pickle(path, sd, buffers, **kw)
    return path


# ---------------------------------------------------------------------------------------------------------------
# The writer itself produces well-formed streams

def test_writer_output_is_a_well_formed_pickle(official_file):
    # pickletools walks the opcodes and checks the stack/memo discipline without running anything.
    pickletools.dis(official_file.read_bytes(), out=io.StringIO())


def test_writer_storage_bytes_are_what_torch_reads():
    # Independent check of the legacy storage stream: torch's own weights-only loader accepts it.
    for t, location in ((torch.arange(6, dtype=torch.float32).reshape(2, 3), "cpu"),
                        (torch.arange(4, dtype=torch.int64), "cuda:0")):
        data = io.BytesIO(w.legacy_storage_bytes(t, location))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TypedStorage deprecation
            storage = torch.load(data, map_location="cpu", weights_only=True)
            assert storage.dtype == t.dtype and storage.tolist() == t.flatten().tolist()


def test_reads_tensors_pickled_by_real_torch_and_numpy():
    # Independent check of the reader: bytes from the real pickler (torch's tensor/Parameter reduce, numpy
    # scalars and arrays, OrderedDict, set), at protocols 2 and 4.
    t = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # non-contiguous
    tagged = torch.zeros(2)
    tagged.note = "python attribute"  # pickled through torch._tensor._rebuild_from_type_v2
    obj = {"t": t, "p": torch.nn.Parameter(torch.ones(2)), "i": torch.arange(3), "h": torch.ones(2).half(),
           "g": np.float64(0.125), "a": np.arange(4, dtype=np.int32), "o": OrderedDict(x=1), "s": {1, 2},
           "dev": torch.device("cuda", 0), "dt": torch.float16, "tagged": tagged}
    for protocol in (2, 4):
        out = _to_plain(_NetworkUnpickler(io.BytesIO(pickle.dumps(obj, protocol=protocol)), "mem").load())
        assert torch.equal(out["t"], t) and out["t"].is_contiguous()
        assert torch.equal(out["p"], torch.ones(2)) and not out["p"].requires_grad
        assert out["i"].dtype == torch.int64 and out["h"].dtype == torch.float16
        assert out["g"] == 0.125 and isinstance(out["g"], float)
        assert out["a"].dtype == np.int32 and out["a"].tolist() == [0, 1, 2, 3]
        assert out["o"] == {"x": 1} and out["s"] == {1, 2}
        assert out["dev"] == "cuda:0" and out["dt"] is torch.float16
        assert torch.equal(out["tagged"], torch.zeros(2))


# ---------------------------------------------------------------------------------------------------------------
# Round trip of the official layout

def test_state_dict_round_trip_names_order_values_dtypes(tiny, loaded):
    sd, _ = tiny
    assert loaded.class_name == "TriPlaneGenerator"
    assert list(loaded.state_dict) == list(sd)
    assert len(loaded.state_dict) == 674
    for name, ref in sd.items():
        got = loaded.state_dict[name]
        assert got.shape == ref.shape and got.dtype == ref.dtype, name
        assert torch.equal(got, ref), name
        assert got.device.type == "cpu" and not got.requires_grad
    assert loaded.state_dict["faces"].dtype == torch.int64
    assert loaded.state_dict["texture_backbone.synthesis.b4.conv1.noise_strength"].shape == ()


def test_names_match_the_official_list_exactly(loaded):
    entries = w.official_entries()
    assert [n for n, _, _ in entries] == list(loaded.state_dict)
    for name, dims, dtype in entries:
        assert str(loaded.state_dict[name].dtype) == f"torch.{dtype}"
        assert tuple(loaded.state_dict[name].shape) == tuple(min(d, 2) for d in dims)


def test_cuda_located_storages_load_on_cpu(official_file, loaded):
    assert describe_official_pickle(official_file)["storage_locations"] == ["cuda:0"]
    assert all(t.device.type == "cpu" for t in loaded.state_dict.values())


def test_attributes_and_init_kwargs(loaded):
    ref = w.official_attributes()
    attrs = loaded.attributes
    assert torch.equal(attrs["plane_axes"], ref["plane_axes"]) and attrs["plane_axes"].shape == (3, 3, 3)
    assert torch.equal(attrs["orth_scale"], torch.tensor([[5.0]]))
    assert torch.equal(attrs["orth_shift"], ref["orth_shift"])
    assert torch.equal(attrs["uv_face_mask"], ref["uv_face_mask"])
    assert attrs["neural_rendering_resolution"] == 64
    assert attrs["rendering_kwargs"] == ref["rendering_kwargs"]
    assert attrs["topology_path"] == "data/demo/head_template.obj" and attrs["fill_mouth"] is True
    assert not any(k.startswith("_") or k == "training" for k in attrs)
    kw = loaded.init_kwargs
    assert type(kw) is dict and type(kw["mapping_kwargs"]) is dict  # EasyDict -> dict, recursively
    assert kw["mapping_kwargs"] == {"num_layers": 2}
    assert kw["sr_kwargs"]["fused_modconv_default"] == "inference_only"
    assert kw["c_dim"] == 25 and kw["conv_clamp"] is None


def test_module_sources_and_classes_are_kept_as_text(loaded):
    assert "class TriPlaneGenerator" in loaded.module_sources["TriPlaneGenerator"]
    # StyleGAN2 and StyleUNet Generators share a class name but not a source: both are kept.
    assert "networks_stylegan2.py" in loaded.module_sources["Generator"]
    assert "styleunet" in loaded.module_sources["Generator (mouth_backbone)"]
    classes = loaded.module_classes
    assert classes[""] == "TriPlaneGenerator"
    assert classes["decoder"] == "training_avatar_texture.triplane_next3d.OSGDecoder"
    assert classes["decoder.net"] == "torch.nn.modules.container.Sequential"
    assert classes["decoder.net.1"] == "torch.nn.modules.activation.Softplus"
    assert classes["renderer"].endswith("renderer.ImportanceRenderer")
    assert classes["mouth_backbone.synthesis.encoder"] == "torch.nn.modules.container.ModuleList"


def test_describe(official_file):
    info = describe_official_pickle(official_file)
    assert info["keys"] == ["G_ema", "training_set_kwargs"]
    assert info["class_name"] == "TriPlaneGenerator" and info["variant"] == "next3d"
    assert info["num_tensors"] == 674
    assert info["num_parameter_tensors"] == 485 and info["num_buffer_tensors"] == 189
    assert info["init_kwargs"]["mapping_kwargs"] == {"num_layers": 2}


@pytest.mark.parametrize("by_reference,protocol", [("reconstructor", 4), ("newobj", 4), ("newobj", 3)])
def test_by_reference_styles_and_protocols(tmp_path, tiny, by_reference, protocol):
    # copyreg._reconstructor (protocol 0/1 style) and NEWOBJ (what protocols >= 2 write) both read.
    path = write(tmp_path, tiny, by_reference=by_reference, protocol=protocol)
    net = load_official_pickle(path)
    assert list(net.state_dict) == list(tiny[0])
    assert net.attributes["plane_axes"].shape == (3, 3, 3)


def test_old_module_spelling_v13_neural_blending(tmp_path, tiny):
    path = write(tmp_path, tiny, triplane_module="training_avatar_texture.triplane_v13_neural_blending")
    net = load_official_pickle(path)
    assert net.module_classes["decoder"] == "training_avatar_texture.triplane_v13_neural_blending.OSGDecoder"
    assert torch.equal(net.state_dict["decoder.net.2.bias"], tiny[0]["decoder.net.2.bias"])


def test_non_persistent_buffers_are_skipped_and_other_keys_ignored(tmp_path, tiny):
    path = write(tmp_path, tiny, non_persistent_buffers={"backbone.synthesis.scratch": torch.zeros(3)},
                 extra_entries={"G": "stripped", "augment_pipe": None}, storage_location="cuda:1")
    net = load_official_pickle(path)
    assert "backbone.synthesis.scratch" not in net.state_dict
    assert list(net.state_dict) == list(tiny[0])


def test_key_argument_selects_another_entry(tmp_path, tiny):
    path = write(tmp_path, tiny, key="G")
    assert list(load_official_pickle(path, key="G").state_dict) == list(tiny[0])


# ---------------------------------------------------------------------------------------------------------------
# Hostile files: nothing runs, the refusal names the global

def _marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned.txt"


def _has_global(data: bytes, module: str, name: str) -> bool:
    """Whether the opcode stream really names module.name (so the refusal is not vacuous)."""
    strings, found = [], False
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL" and arg == f"{module} {name}":
            found = True
        if op.name == "STACK_GLOBAL" and strings[-2:] == [module, name]:
            found = True
        if isinstance(arg, str):
            strings.append(arg)
    return found


@pytest.mark.parametrize("module,name", [("os", "system"), ("posix", "system"), ("builtins", "eval"),
                                         ("subprocess", "Popen"), ("builtins", "getattr")])
def test_refuses_code_running_globals(tmp_path, module, name):
    path, marker = tmp_path / "evil.pkl", _marker(tmp_path)
    w.write_malicious_reduce_pickle(path, marker, module=module, name=name)
    assert _has_global(path.read_bytes(), module, name)
    with pytest.raises(CheckpointError, match=rf"'{module}\.{name}'") as err:
        load_official_pickle(path)
    assert REFUSED in str(err.value)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match=rf"'{module}\.{name}'"):
        describe_official_pickle(path)
    assert not marker.exists()


def test_refuses_os_system_hidden_inside_a_valid_generator(tmp_path):
    path, marker = tmp_path / "evil.pkl", _marker(tmp_path)
    w.write_malicious_reduce_pickle(path, marker, nested=True)
    with pytest.raises(CheckpointError, match=r"'os\.system'.*" + REFUSED):
        load_official_pickle(path)
    assert not marker.exists()


def test_refuses_exec_reduce(tmp_path):
    path, marker = tmp_path / "evil.pkl", _marker(tmp_path)
    w.write_exec_reduce_pickle(path, marker)
    with pytest.raises(CheckpointError, match=r"'builtins\.exec'"):
        load_official_pickle(path)
    assert not marker.exists()


def test_module_src_is_never_executed(tmp_path):
    # The stock loader would exec this source; here it is only text.
    path, marker = tmp_path / "evil.pkl", _marker(tmp_path)
    w.write_exec_module_src_pickle(path, marker)
    net = load_official_pickle(path)
    assert not marker.exists()
    assert "os.system" in net.module_sources["TriPlaneGenerator"]


def test_refuses_hostile_global_inside_storage_bytes(tmp_path):
    path, marker = tmp_path / "evil.pkl", _marker(tmp_path)
    w.write_hostile_storage_pickle(path, marker)
    with pytest.raises(CheckpointError, match=r"storage bytes.*'os\.system'"):
        load_official_pickle(path)
    assert not marker.exists()


def test_refuses_storage_class_outside_storage_bytes(tmp_path):
    path = tmp_path / "x.pkl"
    w.write_pickle(path, {"G_ema": w.Global("torch", "FloatStorage")})
    with pytest.raises(CheckpointError, match=r"'torch\.FloatStorage'"):
        load_official_pickle(path)


@pytest.mark.parametrize("meta", [
    "not a dict",
    {"type": "function", "version": 6, "module_src": "", "class_name": "X", "state": {}},
    {"type": "class", "version": 6, "module_src": "", "class_name": "X"},
    {"type": "class", "version": 6, "module_src": "", "class_name": "os.system", "state": {}},
])
def test_refuses_unexpected_persistent_meta(tmp_path, meta):
    path = tmp_path / "x.pkl"
    w.write_bad_meta_pickle(path, meta)
    with pytest.raises(CheckpointError, match="metadata dict.*" + REFUSED):
        load_official_pickle(path)


def test_refuses_persistent_id_in_outer_pickle(tmp_path):
    path = tmp_path / "x.pkl"
    w.write_persistent_id_pickle(path)
    with pytest.raises(CheckpointError, match="persistent id"):
        load_official_pickle(path)


# ---------------------------------------------------------------------------------------------------------------
# Wrong files: clear messages

def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.pkl"
    with pytest.raises(CheckpointError, match="not found.*nope.pkl"):
        load_official_pickle(path)


def test_missing_key_lists_the_keys(tmp_path, tiny):
    path = write(tmp_path, tiny, key="G")
    with pytest.raises(CheckpointError, match=r"no 'G_ema' entry; it holds 'G', 'training_set_kwargs'"):
        load_official_pickle(path)


def test_eg3d_generator_is_named(tmp_path, tiny):
    sd, buffers = tiny
    eg3d = OrderedDict((k, v) for k, v in sd.items() if k.split(".")[0] in ("backbone", "superresolution", "decoder"))
    path = tmp_path / "ffhq512-128.pkl"
    w.write_official_pickle(path, eg3d, buffers, w.official_init_kwargs(), w.official_attributes(),
                            triplane_module="training.triplane")
    with pytest.raises(CheckpointError, match="EG3D TriPlaneGenerator"):
        load_official_pickle(path)
    assert describe_official_pickle(path)["variant"] == "eg3d"


def test_other_network_class_is_named(tmp_path, tiny):
    path = write(tmp_path, tiny, class_name="Generator")
    with pytest.raises(CheckpointError, match="is a Generator, not a Next3D TriPlaneGenerator"):
        load_official_pickle(path)


def test_next3d_plus_plus_like_generator_is_named(tmp_path, tiny):
    sd, buffers = tiny
    partial = OrderedDict((k, v) for k, v in sd.items() if not k.startswith(("mouth_backbone", "neural_blending")))
    path = tmp_path / "ani3dgan512.pkl"
    w.write_official_pickle(path, partial, buffers, w.official_init_kwargs(), w.official_attributes())
    with pytest.raises(CheckpointError, match="lacks mouth_backbone, neural_blending"):
        load_official_pickle(path)


def test_entry_that_is_not_a_network(tmp_path):
    path = tmp_path / "x.pkl"
    w.write_pickle(path, {"G_ema": {"a": 1}})
    with pytest.raises(CheckpointError, match="not a network saved by torch_utils.persistence"):
        load_official_pickle(path)


def test_torch_save_zip_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not a Python pickle: it looks like a zip archive.*torch.save"):
        load_official_pickle(path)


def test_legacy_torch_save_file(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match="legacy torch.save file"):
        load_official_pickle(path)


def test_safetensors_file(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(2)}, str(path))
    with pytest.raises(CheckpointError, match="safetensors file from another project"):
        load_official_pickle(path)


@pytest.mark.parametrize("data,phrase", [
    (bytes(range(256)) * 4, "neither a pickle"),
    (b"", "an empty file"),
    (b"<!DOCTYPE html><html><body>Google Drive can't scan this file</body></html>", "a web page"),
])
def test_not_a_pickle(tmp_path, data, phrase):
    path = tmp_path / "x.pkl"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=f"not a Python pickle: it looks like {phrase}"):
        load_official_pickle(path)


def test_truncated_pickle(tmp_path, official_file):
    path = tmp_path / "cut.pkl"
    path.write_bytes(official_file.read_bytes()[:200_000])
    with pytest.raises(CheckpointError, match="truncated|corrupted"):
        load_official_pickle(path)


def test_a_pickled_list_is_not_a_network_pickle(tmp_path):
    path = tmp_path / "x.pkl"
    w.write_pickle(path, [1, 2, 3])
    with pytest.raises(CheckpointError, match="holds a pickled list"):
        load_official_pickle(path)


def test_no_unrestricted_loads_in_the_readers():
    # The whole point of the module: no plain pickle.load / torch.load, no exec/eval in the checkpoint readers.
    root = Path(__file__).resolve().parents[2] / "core" / "io"
    for name in ("official_pickle.py", "safetensors_format.py", "restricted_pickle.py", "bounded_read.py"):
        text = (root / name).read_text(encoding="utf-8")
        assert not re.search(r"pickle\.loads?\(|torch\.load\(|\bexec\(|(?<!\.)\beval\(", text), name


# ---------------------------------------------------------------------------------------------------------------
# Bounded reading (the fuzz corpus, tests/core/test_hostile_files.py, runs many more files in subprocesses)

def _top(payload: bytes) -> bytes:
    return b"\x80\x02}X\x05\x00\x00\x00G_ema" + payload + b"s."


def test_build_cannot_change_the_readers_classes_or_functions(tmp_path):
    # BUILD with a (dict, slots) state sets attributes on whatever it targets; on a global the whitelist hands out it
    # would change the reader for the rest of the process. It is refused and nothing changes.
    from core.io import official_pickle as op

    before = dict(vars(op._EasyDict)), op._rebuild_tensor_v2.__defaults__
    path = tmp_path / "build.pkl"
    for target in (b"cdnnlib.util\nEasyDict\n", b"ctorch._utils\n_rebuild_tensor_v2\n"):
        path.write_bytes(_top(target + b"N}X\x0c\x00\x00\x00__setstate__cbuiltins\nset\ns\x86b"))
        with pytest.raises(CheckpointError, match="sets the state of a (type|function)"):
            load_official_pickle(path)
    assert dict(vars(op._EasyDict)) == before[0] and op._rebuild_tensor_v2.__defaults__ == before[1]


def test_shared_references_are_read_until_they_expand_beyond_the_file():
    shared = {"depth_resolution": 48}
    out = _to_plain(_NetworkUnpickler(io.BytesIO(pickle.dumps({"a": shared, "b": [shared] * 100})), "mem").load())
    assert out["b"][99] == {"depth_resolution": 48}
    bomb: list = [0]
    for _ in range(30):
        bomb = [bomb, bomb]   # the pickler writes each level once: 2**30 references in ~300 bytes
    with pytest.raises(CheckpointError, match=r"expands its shared references in '\[0\]\[0\]"):
        _NetworkUnpickler(io.BytesIO(pickle.dumps(bomb)), "mem").load()


def test_a_tensor_may_not_ask_for_more_than_its_storage_holds():
    data = pickle.dumps({"ok": torch.zeros(1).expand(1, 1), "expanded": torch.zeros(1).expand(2 ** 20)})
    out = _NetworkUnpickler(io.BytesIO(data), "mem").load()
    assert _to_plain(out["ok"]).shape == (1, 1)
    with pytest.raises(CheckpointError, match=r"'expanded' of shape \[1048576\] repeats its stored numbers"):
        _to_plain(out, where="")
