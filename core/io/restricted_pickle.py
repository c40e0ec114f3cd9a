"""Inert stand-ins shared by the restricted unpicklers of official files (FLAME model pickles, Next3D network pickles).

A restricted unpickler answers `find_class` only from a whitelist; what the whitelist hands out lives here: a base
for classes pickled by reference (construction ignores its arguments, `__setstate__` only stores the state) and the
numpy, `_codecs` and `copyreg` stand-ins, which rebuild arrays and scalars from their raw bytes. Nothing here imports
or calls anything a pickle names. Each kind of file brings its own `PickleRules`: the dtypes and array layouts it may
hold, and the sentence every refusal ends with, naming the file that was expected.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CheckpointError

__all__ = ["PickleRules", "InertObject", "inert_class", "NdarrayMarker", "ObjectMarker", "NumpyDType", "NumpyArray",
           "ObjectArray", "NumpyStandIns"]

_OBJECT_DTYPES = frozenset({"O", "O4", "O8", "object"})
_BYTE_ORDERS = ("<", ">", "|", "=")


@dataclass(frozen=True)
class PickleRules:
    """What one kind of file may hold, and how its refusals end.

    refusal: one or more full sentences naming the file that was expected; ends every refusal message.
    dtypes: the numeric numpy dtype names accepted (as `numpy.dtype.__reduce__` spells them, or longer names).
    object_arrays: accept numpy object arrays (their items are kept, already unpickled, as an `ObjectArray`).
    legacy_arrays: accept what Python 2 / old numpy pickles hold: str payloads (read as latin1), bytes dtype
        names and 4-tuple array states without a version.
    """

    refusal: str
    dtypes: frozenset
    object_arrays: bool = False
    legacy_arrays: bool = False

    def error(self, problem: str) -> CheckpointError:
        """`problem` (a sentence without its final period) followed by the refusal sentence."""
        return CheckpointError(f"{problem}. {self.refusal}")

    def raw_bytes(self, data: Any) -> Any:
        """A payload as bytes where the rules allow a Python 2 str; anything else as it is (the caller checks)."""
        if self.legacy_arrays and isinstance(data, str):
            return data.encode("latin1")
        return data


# ----------------------------------------------------------------------------------------------------------------
# Classes pickled by reference

class InertObject:
    """Base of the stand-ins for classes pickled by reference: construction ignores its arguments and
    `__setstate__` only stores the state (a dict). Subclasses set `refusal`, the sentence their errors end with."""

    pickle_module = ""
    pickle_name = ""
    refusal = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertObject":
        obj = object.__new__(cls)
        obj.state = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        # Objects with __slots__ pickle their state as (dict, slots); either part may be None.
        if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
            merged = dict(state[0] or {})
            merged.update(state[1] or {})
            state = merged
        if not isinstance(state, dict):
            raise CheckpointError(f"The pickled {self.qualified_name()} object has a {type(state).__name__} state "
                                  f"instead of a dict. {self.refusal}")
        self.state = state

    @classmethod
    def qualified_name(cls) -> str:
        return f"{cls.pickle_module}.{cls.pickle_name}"


_INERT_CLASSES: dict[tuple[type, str, str], type] = {}


def inert_class(base: type, module: str, name: str) -> type:
    """The inert stand-in (a subclass of `base`, itself a subclass of InertObject) for the class `module.name`;
    one class per (base, module, name), so that objects of the same pickled class share a type."""
    if not (isinstance(base, type) and issubclass(base, InertObject)):
        raise TypeError(f"{base!r} is not an InertObject subclass")
    key = (base, module, name)
    if key not in _INERT_CLASSES:
        _INERT_CLASSES[key] = type(name, (base,), {"pickle_module": module, "pickle_name": name})
    return _INERT_CLASSES[key]


class ObjectMarker:
    """Stand-in for `builtins.object` / `__builtin__.object` (only meaningful as copyreg._reconstructor's base)."""


class NdarrayMarker:
    """Stand-in for the `numpy.ndarray` class (only meaningful as `_reconstruct`'s first argument)."""


# ----------------------------------------------------------------------------------------------------------------
# numpy

class NumpyDType:
    """Stand-in for `numpy.dtype(name, align, copy)` + its BUILD state: the rules' numeric dtypes, and object
    dtypes where the rules allow object arrays."""

    def __init__(self, rules: PickleRules, name: Any) -> None:
        if rules.legacy_arrays and isinstance(name, bytes):
            name = name.decode("latin1")
        allowed = rules.dtypes | _OBJECT_DTYPES if rules.object_arrays else rules.dtypes
        if not isinstance(name, str) or name not in allowed:
            raise rules.error(f"The pickle holds a numpy dtype {name!r}; only plain numeric arrays are read")
        self.name = name
        self.byteorder = "="

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) >= 2 and state[1] in _BYTE_ORDERS:
            self.byteorder = state[1]

    @property
    def is_object(self) -> bool:
        return self.name in _OBJECT_DTYPES

    def to_numpy(self) -> np.dtype:
        dt = np.dtype(self.name)
        return dt if self.byteorder in ("|", "=") else dt.newbyteorder(self.byteorder)


@dataclass
class ObjectArray:
    """A numpy object array: its shape and its items (already unpickled, so already inert)."""

    shape: tuple
    items: list


class NumpyArray:
    """Stand-in for `numpy.core.multiarray._reconstruct(ndarray, shape, typecode)` + BUILD.

    `value` is None until the BUILD state arrives, then a C-contiguous array in native byte order rebuilt from the
    raw bytes (their count checked against shape and dtype), or an ObjectArray where the rules allow them."""

    def __init__(self, rules: PickleRules) -> None:
        self.rules = rules
        self.value: Any = None

    def __setstate__(self, state: Any) -> None:
        layouts = (4, 5) if self.rules.legacy_arrays else (5,)
        if not (isinstance(state, tuple) and len(state) in layouts):
            raise self.rules.error("The pickle holds a numpy array in an unknown layout")
        if len(state) == 5:
            state = state[1:]   # (version, shape, dtype, is_fortran, data)
        self.fill(*state)

    def fill(self, shape: Any, dtype: Any, fortran: Any, data: Any) -> None:
        rules = self.rules
        if not isinstance(dtype, NumpyDType):
            raise rules.error("The pickle holds a numpy array without a numpy dtype")
        try:
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise rules.error("The pickle holds a numpy array with an invalid shape") from None
        if any(s < 0 for s in shape):
            raise rules.error("The pickle holds a numpy array with an invalid shape")
        count = math.prod(shape)
        if dtype.is_object:
            if not isinstance(data, list) or len(data) != count:
                raise rules.error("The pickle holds an object array with the wrong number of items")
            self.value = ObjectArray(shape, data)
            return
        data = rules.raw_bytes(data)
        if not isinstance(data, (bytes, bytearray)):
            raise rules.error("The pickle holds a numeric numpy array without raw bytes")
        dt = dtype.to_numpy()
        if len(data) != count * dt.itemsize:
            raise CheckpointError(f"A pickled numpy array of shape {list(shape)} holds {len(data)} bytes instead of "
                                  f"{count * dt.itemsize}; the file is corrupted. Download it again.")
        arr = np.frombuffer(bytes(data), dtype=dt).reshape(shape, order="F" if fortran else "C")
        self.value = np.array(arr, dtype=dt.newbyteorder("="), order="C")


class NumpyStandIns:
    """The numpy, `_codecs` and `copyreg` stand-ins of one kind of file, bound to its rules.

    inert_base: the InertObject subclass whose classes `copyreg._reconstructor` may build."""

    def __init__(self, rules: PickleRules, inert_base: type) -> None:
        if not (isinstance(inert_base, type) and issubclass(inert_base, InertObject)):
            raise TypeError(f"{inert_base!r} is not an InertObject subclass")
        self.rules = rules
        self.inert_base = inert_base

    def dtype(self, name: Any = None, align: Any = False, copy: Any = False) -> NumpyDType:
        """`numpy.dtype(name, align, copy)`."""
        return NumpyDType(self.rules, name)

    def reconstruct(self, subtype: Any, shape: Any, typecode: Any) -> NumpyArray:
        """`numpy.core.multiarray._reconstruct(ndarray, shape, typecode)`; the array arrives with BUILD."""
        if not (isinstance(subtype, type) and issubclass(subtype, NdarrayMarker)):
            raise self.rules.error("The pickle rebuilds a numpy array of an unexpected type")
        return NumpyArray(self.rules)

    def frombuffer(self, buf: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
        """Protocol-5 numpy arrays: `numpy.core.numeric._frombuffer(bytes, dtype, shape, order)`."""
        if isinstance(buf, pickle.PickleBuffer):
            buf = bytes(buf.raw())
        if not isinstance(buf, (bytes, bytearray)) or not isinstance(dtype, NumpyDType) or dtype.is_object:
            raise self.rules.error("The pickle rebuilds a numpy array from unexpected arguments")
        arr = NumpyArray(self.rules)
        arr.fill(shape, dtype, order == "F", bytes(buf))
        return arr.value

    def scalar(self, dtype: Any, data: Any = None) -> Any:
        """`numpy.core.multiarray.scalar(dtype, bytes)` -> the Python number."""
        data = self.rules.raw_bytes(data)
        if not isinstance(dtype, NumpyDType) or dtype.is_object or not isinstance(data, (bytes, bytearray)):
            raise self.rules.error("The pickle holds a numpy scalar that is not a plain number")
        dt = dtype.to_numpy()
        if len(data) != dt.itemsize:
            raise CheckpointError("A pickled numpy scalar has the wrong number of bytes; the file is corrupted. "
                                  "Download it again.")
        return np.frombuffer(bytes(data), dtype=dt)[0].item()

    def codecs_encode(self, text: Any, encoding: Any = "utf-8") -> bytes:
        """`_codecs.encode(str, 'latin1')`: how protocol-2 pickles written by Python 3 spell bytes."""
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise self.rules.error("The pickle calls _codecs.encode with unexpected arguments")
        return text.encode("latin1")

    def copyreg_reconstructor(self, cls: Any, base: Any, state: Any) -> InertObject:
        """`copyreg._reconstructor(cls, object, None)` (protocol 0/1 pickles of plain objects) for inert classes."""
        if isinstance(cls, type) and issubclass(cls, self.inert_base) and isinstance(base, type) \
                and issubclass(base, ObjectMarker) and state is None:
            return cls()
        raise self.rules.error("The pickle calls copyreg._reconstructor on something other than a known class")

    def globals(self, *, frombuffer: bool = False) -> dict[tuple[str, str], Any]:
        """Whitelist entries (module, name) -> stand-in for numpy arrays, dtypes and scalars, `_codecs.encode`,
        `copyreg._reconstructor` and `object`, in their Python 3 and Python 2 / numpy 1 and 2 spellings.
        frombuffer: also the protocol-5 `numpy.core.numeric._frombuffer`."""
        out: dict[tuple[str, str], Any] = {
            ("numpy", "dtype"): self.dtype,
            ("numpy", "ndarray"): NdarrayMarker,
            ("_codecs", "encode"): self.codecs_encode,
        }
        for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            out[(module, "_reconstruct")] = self.reconstruct
            out[(module, "scalar")] = self.scalar
        if frombuffer:
            for module in ("numpy.core.numeric", "numpy._core.numeric"):
                out[(module, "_frombuffer")] = self.frombuffer
        for module in ("copyreg", "copy_reg"):
            out[(module, "_reconstructor")] = self.copyreg_reconstructor
        for module in ("builtins", "__builtin__"):
            out[(module, "object")] = ObjectMarker
        return out
