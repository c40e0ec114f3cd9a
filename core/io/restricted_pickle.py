"""Inert stand-ins shared by the restricted unpicklers of official files (FLAME model pickles, Next3D network pickles).

A restricted unpickler answers `find_class` only from a whitelist; what the whitelist hands out lives here: a base
for classes pickled by reference (construction ignores its arguments, `__setstate__` only stores the state) and the
numpy, `_codecs` and `copyreg` stand-ins, which rebuild arrays and scalars from their raw bytes. Nothing here imports
or calls anything a pickle names. Each kind of file brings its own `PickleRules`: the dtypes and array layouts it may
hold, and the sentence every refusal ends with, naming the file that was expected.

Both readers unpickle with `BoundedUnpickler`, which keeps a hostile file from costing more than its size: no read
beyond the stream, BUILD only on fresh records, dict keys cheap to hash, and a result that, with its shared references
expanded, weighs at most twice the file and nests a bounded number of levels.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import reprlib
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CheckpointError

__all__ = ["PickleRules", "InertObject", "inert_class", "NdarrayMarker", "ObjectMarker", "NumpyDType", "NumpyArray",
           "ObjectArray", "NumpyStandIns", "BoundedUnpickler", "check_expansion", "expansion_budget", "cheap_to_hash",
           "short_repr", "one_line"]

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

    def pickled_parts(self) -> tuple:
        return (self.state,)

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

    def pickled_parts(self) -> list:
        return self.items


class NumpyArray:
    """Stand-in for `numpy.core.multiarray._reconstruct(ndarray, shape, typecode)` + BUILD.

    `value` is None until the BUILD state arrives, then a C-contiguous array in native byte order rebuilt from the
    raw bytes (their count checked against shape and dtype), or an ObjectArray where the rules allow them."""

    def __init__(self, rules: PickleRules) -> None:
        self.rules = rules
        self.value: Any = None

    def pickled_parts(self) -> list:
        return self.value.items if isinstance(self.value, ObjectArray) else []

    def pickled_weight(self) -> int:
        return 1 + (self.value.nbytes if isinstance(self.value, np.ndarray) else 0)

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
        if len(shape) > 32 or any(not 0 <= s < 2 ** 48 for s in shape):
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


# ----------------------------------------------------------------------------------------------------------------
# Bounded unpickling: work, memory and result stay proportional to the file

_CHEAP_KEYS = (str, bytes, int, float, bool, type(None), complex)
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 60, 60, 40


def short_repr(value: Any, limit: int = 80) -> str:
    """A repr of at most `limit` characters whose cost does not depend on what `value` holds (shared-reference
    bombs, deep nesting, huge numbers)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int too long to print
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line of at most `limit` characters, for quoting in an error message."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def cheap_to_hash(key: Any, depth: int = 0) -> bool:
    """Whether hashing `key` costs a bounded time: numbers and strings (hashed once), objects hashed by identity
    and short flat tuples of those. A tuple of tuples built from shared references would take exponential time."""
    kind = type(key)
    if kind in _CHEAP_KEYS:
        return True
    if kind is tuple:
        return depth == 0 and len(key) <= 16 and all(cheap_to_hash(k, 1) for k in key)
    return not isinstance(key, type) and kind.__hash__ is object.__hash__


def _stream_size(file: Any) -> int:
    try:
        return os.fstat(file.fileno()).st_size
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        pos = file.tell()
        end = file.seek(0, io.SEEK_END)
        file.seek(pos)
        return end


class _BoundedReader:
    """The file as the unpickler reads it: a length field in the pickle can never make it ask for (and allocate)
    more bytes than the stream has left, and a short stream is an error, not a short string."""

    def __init__(self, file: Any, size: int) -> None:
        self._file = file
        self.left = max(size - file.tell(), 0)

    def read(self, n: int = -1) -> bytes:
        n = self.left if n is None or n < 0 else n
        if n > self.left:
            raise pickle.UnpicklingError(f"the pickle asks for {n} bytes where {self.left} are left; it is truncated")
        data = self._file.read(n)
        if len(data) != n:
            raise pickle.UnpicklingError("the pickle ends early; it is truncated")
        self.left -= n
        return data

    def readline(self) -> bytes:
        line = self._file.readline(self.left)
        self.left -= len(line)
        if not line.endswith(b"\n"):
            raise pickle.UnpicklingError("the pickle ends inside a line; it is truncated")
        return line


def _children(obj: Any) -> list:
    """(label, child) pairs of an unpickled value: dict keys and values, sequence and set items, and what a record
    declares with `pickled_parts()`. Labels name the path in errors (None: not shown)."""
    if isinstance(obj, type):
        return []
    if isinstance(obj, dict):
        out = []
        for k, v in obj.items():
            out.append((None, k))
            out.append((k, v))
        return out
    if isinstance(obj, (list, tuple)):
        return list(enumerate(obj))
    if isinstance(obj, (set, frozenset)):
        return [(None, x) for x in obj]
    parts = getattr(obj, "pickled_parts", None)
    return [(None, x) for x in parts()] if parts is not None else []


def _weight(obj: Any) -> int:
    """What one reference to `obj` costs whoever expands it: its length in bytes for strings, byte strings and
    arrays (records say theirs with `pickled_weight()`), 1 for anything else."""
    kind = type(obj)
    if kind is str or kind is bytes or kind is bytearray:
        return 1 + len(obj)
    if kind is np.ndarray:
        return 1 + obj.nbytes
    if isinstance(obj, type):
        return 1
    weight = getattr(obj, "pickled_weight", None)
    return weight() if weight is not None else 1


def _path_text(labels: list) -> str:
    parts = []
    for label in labels:
        if label is None:
            continue
        parts.append(f"[{label}]" if isinstance(label, int) else ("." if parts else "") + short_repr(label, 40)
                     .strip("'"))
        if len(parts) == 8:
            parts.append("...")
            break
    return "".join(parts) or "<top level>"


def check_expansion(top: Any, *, max_weight: int, max_depth: int, fail: Any) -> int:
    """The weight of `top` with every shared reference expanded (what a walk over it, a copy or a printout costs),
    computed once per distinct object. Calls `fail(problem)` (which raises) on a loop, on nesting deeper than
    `max_depth`, or when the weight passes `max_weight`; the problem names the entry."""
    weights: dict[int, int] = {}
    frames = [[top, None, iter(_children(top)), _weight(top)]]
    on_path = {id(top)}

    def where(extra: Any = None) -> str:
        return _path_text([f[1] for f in frames[1:]] + ([extra] if extra is not None else []))

    while frames:
        frame = frames[-1]
        for label, child in frame[2]:
            w = weights.get(id(child))
            if w is None:
                kids = _children(child)
                if kids:
                    if id(child) in on_path:
                        fail(f"refers back to itself at '{where(label)}'")
                    if len(frames) >= max_depth:
                        fail(f"nests deeper than {max_depth} levels at '{where(label)}'")
                    on_path.add(id(child))
                    frames.append([child, label, iter(kids), _weight(child)])
                    break
                w = weights[id(child)] = _weight(child)
            frame[3] += w
            if frame[3] > max_weight:
                fail(f"expands its shared references in '{where(label)}' to more than {max_weight:,} bytes; a "
                     "file of this size cannot hold that much")
        else:
            frames.pop()
            on_path.discard(id(frame[0]))
            weights[id(frame[0])] = frame[3]
            if frames:
                frames[-1][3] += frame[3]
                if frames[-1][3] > max_weight:
                    fail(f"expands its shared references in '{where()}' to more than {max_weight:,} bytes; a "
                         "file of this size cannot hold that much")
    return weights[id(top)]


def expansion_budget(size: int) -> int:
    """The most a pickle of `size` bytes may weigh expanded: twice its size (plain pickles weigh less than their
    bytes; the slack is for the few shared dicts real files have), plus 64 KiB for tiny files."""
    return 2 * size + 65536


class BoundedUnpickler(pickle._Unpickler):
    """An unpickler whose work and result stay proportional to the file. It is the pure-Python unpickler of the
    standard library, so that every opcode that builds or changes something can be checked first:

    - reads never ask for more bytes than the stream has left (a length field cannot make it allocate);
    - REDUCE, NEWOBJ and OBJ/INST call only what `find_class` handed out, with a plain tuple of arguments;
    - BUILD fills only a record of the `build_targets` types, once: never a class, a function or a finished object;
    - APPENDS, SETITEMS and ADDITEMS fill only plain lists, dicts and sets, and dict keys and set items must be
      cheap to hash (`cheap_to_hash`);
    - the result, with every shared reference expanded, weighs at most `expansion_budget(size)` (see `_weight`),
      nests at most `max_depth` levels and has no loops.

    Subclasses define `find_class` (and `persistent_load`). `source` names the file in errors; every error is a
    CheckpointError ending with the rules' refusal sentence."""

    build_targets: tuple = (InertObject, NumpyArray, NumpyDType)
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: Any, rules: PickleRules, source: str, *, max_depth: int, encoding: str = "ASCII",
                 size: int | None = None) -> None:
        size = _stream_size(file) if size is None else size
        self._reader = _BoundedReader(file, size)
        super().__init__(self._reader, encoding=encoding)
        self.rules = rules
        self.source = source
        self.max_depth = max_depth
        self.max_weight = expansion_budget(size)
        self._handed_out: dict[int, Any] = {}
        self._built: dict[int, Any] = {}

    def refuse(self, problem: str) -> CheckpointError:
        return self.rules.error(f"{self.source} {problem}")

    def _fail(self, problem: str) -> None:
        raise self.refuse(problem)

    def load(self) -> Any:
        top = super().load()
        check_expansion(top, max_weight=self.max_weight, max_depth=self.max_depth, fail=self._fail)
        return top

    # -- what may be called
    def _hand_out(self, obj: Any) -> Any:
        self._handed_out[id(obj)] = obj
        return obj

    def _check_callable(self, func: Any, args: Any) -> None:
        if self._handed_out.get(id(func)) is not func:
            raise self.refuse(f"calls a {type(func).__name__} that no global of the pickle names")
        if type(args) is not tuple:
            raise self.refuse(f"calls {getattr(func, '__name__', 'a global')} with a {type(args).__name__} of "
                              "arguments")

    def load_global(self) -> None:
        module = self.readline()[:-1].decode("utf-8")
        name = self.readline()[:-1].decode("utf-8")
        self.append(self._hand_out(self.find_class(module, name)))
    dispatch[pickle.GLOBAL[0]] = load_global

    def load_stack_global(self) -> None:
        name = self.stack.pop()
        module = self.stack.pop()
        if type(name) is not str or type(module) is not str:
            raise pickle.UnpicklingError("STACK_GLOBAL requires str")
        self.append(self._hand_out(self.find_class(module, name)))
    dispatch[pickle.STACK_GLOBAL[0]] = load_stack_global

    def load_ext(self) -> None:
        raise self.refuse("uses the pickle extension registry, which these files never do")
    for _op in (pickle.EXT1, pickle.EXT2, pickle.EXT4):
        dispatch[_op[0]] = load_ext

    def load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        self._check_callable(func, args)
        self.stack[-1] = func(*args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def _new(self, cls: Any, args: Any, kwargs: Any = None) -> None:
        self._check_callable(cls, args)
        if not isinstance(cls, type):
            raise self.refuse(f"creates an object of {short_repr(cls)}, which is not a class")
        if kwargs is not None and not (type(kwargs) is dict and all(type(k) is str for k in kwargs)):
            raise self.refuse("creates an object with malformed keyword arguments")
        self.append(cls.__new__(cls, *args, **(kwargs or {})))

    def load_newobj(self) -> None:
        args = self.stack.pop()
        self._new(self.stack.pop(), args)
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        self._new(self.stack.pop(), args, kwargs)
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex

    def _instantiate(self, klass: Any, args: Any) -> None:
        args = tuple(args)
        self._check_callable(klass, args)
        super()._instantiate(klass, args)

    def load_inst(self) -> None:
        module = self.readline()[:-1].decode("ascii")
        name = self.readline()[:-1].decode("ascii")
        klass = self._hand_out(self.find_class(module, name))
        self._instantiate(klass, self.pop_mark())
    dispatch[pickle.INST[0]] = load_inst

    # -- what may be changed
    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if isinstance(inst, type) or not isinstance(inst, self.build_targets):
            raise self.refuse(f"sets the state of a {type(inst).__name__}; only the records of plain objects and "
                              "arrays take a state")
        if id(inst) in self._built:
            raise self.refuse(f"sets the state of the same {type(inst).__name__} twice")
        self._built[id(inst)] = inst
        inst.__setstate__(state)
    dispatch[pickle.BUILD[0]] = load_build

    def _check_keys(self, keys: Any, what: str) -> None:
        for key in keys:
            if not cheap_to_hash(key):
                raise self.refuse(f"uses a {type(key).__name__} as a {what}; only numbers, strings and short "
                                  "tuples of them are")

    def _target(self, kinds: tuple, what: str) -> Any:
        target = self.stack[-1]
        if isinstance(target, type) or not isinstance(target, kinds):
            raise self.refuse(f"adds {what} to a {type(target).__name__}")
        return target

    def load_append(self) -> None:
        value = self.stack.pop()
        self._target((list,), "list items").append(value)
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._target((list,), "list items").extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._check_keys((key,), "dict key")
        self._target((dict,), "dict items")[key] = value
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise pickle.UnpicklingError("SETITEMS with an odd number of items")
        self._check_keys(items[::2], "dict key")
        target = self._target((dict,), "dict items")
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_dict(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise pickle.UnpicklingError("DICT with an odd number of items")
        self._check_keys(items[::2], "dict key")
        self.append({items[i]: items[i + 1] for i in range(0, len(items), 2)})
    dispatch[pickle.DICT[0]] = load_dict

    def load_additems(self) -> None:
        items = self.pop_mark()
        self._check_keys(items, "set item")
        self._target((set,), "set items").update(items)
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self._check_keys(items, "set item")
        self.append(frozenset(items))
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def load_bytearray8(self) -> None:
        (n,) = struct.unpack("<Q", self.read(8))
        self.append(bytearray(self.read(n)))
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8

    def load_invalid(self) -> None:
        raise pickle.UnpicklingError("the pickle holds an invalid opcode; it is damaged")
    for _op in range(256):
        dispatch.setdefault(_op, load_invalid)

    del _op
