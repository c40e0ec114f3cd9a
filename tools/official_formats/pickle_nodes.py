"""What both official pickle writers share: the nodes that say what to pickle (a global, a call, a NEWOBJ) and an
opcode writer for plain values and those nodes.

The two flavours differ in how they write numbers, strings and the memo, so each writer (flame_pickle.py: Python 2's
pickle of FLAME; network_pickle.py: PyTorch's pickles of Next3D) subclasses `OpcodeWriter` for those and for its
own kinds of value.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from typing import Any

NO_STATE = object()


@dataclass(frozen=True)
class Global:
    """A module-level name, written with GLOBAL / STACK_GLOBAL."""
    module: str
    name: str


@dataclass(eq=False)
class Call:
    """`func(*args)` (REDUCE), then optional SETITEMS of `items` and BUILD with `state`."""
    func: Any
    args: tuple
    state: Any = NO_STATE
    items: list | None = None


@dataclass(eq=False)
class NewObj:
    """`cls.__new__(cls, *args)` (protocol-2 NEWOBJ), then BUILD with `state`, as protocol >= 2 pickles plain
    objects."""
    cls: Global
    args: tuple = ()
    state: Any = NO_STATE


class OpcodeWriter:
    """Writes a value as pickle opcodes. Subclasses write numbers, strings, bytes and globals in their flavour,
    decide what enters the memo, and handle their own kinds of value in `special`."""

    def __init__(self, protocol: int) -> None:
        self.protocol = protocol
        self.out = bytearray()

    def pickle(self, obj: Any) -> bytes:
        self.out += pickle.PROTO + bytes([self.protocol])
        self.dump(obj)
        self.out += pickle.STOP
        return bytes(self.out)

    # -- what the flavours decide
    def _int(self, x: int) -> None:
        raise NotImplementedError

    def _str(self, s: str) -> None:
        raise NotImplementedError

    def _bytes(self, b: bytes) -> None:
        raise NotImplementedError

    def _global(self, g: Global) -> None:
        raise NotImplementedError

    def _get(self, obj: Any) -> bool:
        """Write a memo reference to `obj` if it was memoized; whether it was."""
        return False

    def _memoize(self, obj: Any) -> None:
        """Put the value just written into the memo (when the flavour does)."""

    def special(self, obj: Any) -> bool:
        """Write a value of the flavour's own kinds; whether `obj` was one."""
        return False

    # -- values
    def dump(self, obj: Any) -> None:
        out = self.out
        if obj is None:
            out += pickle.NONE
        elif obj is True or obj is False:
            out += pickle.NEWTRUE if obj else pickle.NEWFALSE
        elif isinstance(obj, int):
            self._int(obj)
        elif isinstance(obj, float):
            out += pickle.BINFLOAT + struct.pack(">d", obj)
        elif isinstance(obj, str):
            self._str(obj)
        elif isinstance(obj, bytes):
            self._bytes(obj)
        elif self._get(obj) or self.special(obj):
            return
        elif isinstance(obj, Global):
            self._global(obj)
        elif isinstance(obj, tuple):
            self._tuple(obj)
        elif isinstance(obj, list):
            out += pickle.EMPTY_LIST
            self._memoize(obj)
            if obj:
                out += pickle.MARK
                for item in obj:
                    self.dump(item)
                out += pickle.APPENDS
        elif isinstance(obj, dict):
            out += pickle.EMPTY_DICT
            self._memoize(obj)
            self._setitems(list(obj.items()))
        elif isinstance(obj, Call):
            self.dump(obj.func)
            self.dump(tuple(obj.args))
            out += pickle.REDUCE
            self._memoize(obj)
            if obj.items:
                self._setitems(obj.items)
            self._build(obj.state)
        elif isinstance(obj, NewObj):
            self.dump(obj.cls)
            self.dump(tuple(obj.args))
            out += pickle.NEWOBJ
            self._memoize(obj)
            self._build(obj.state)
        else:
            raise TypeError(f"cannot write {type(obj).__name__}")

    def _build(self, state: Any) -> None:
        if state is not NO_STATE:
            self.dump(state)
            self.out += pickle.BUILD

    def _tuple(self, t: tuple) -> None:
        if not t:
            self.out += pickle.EMPTY_TUPLE
            return
        if len(t) <= 3:
            for item in t:
                self.dump(item)
            self.out += (pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)[len(t) - 1]
        else:
            self.out += pickle.MARK
            for item in t:
                self.dump(item)
            self.out += pickle.TUPLE
        self._memoize(t)

    def _setitems(self, items: list) -> None:
        if not items:
            return
        for start in range(0, len(items), 1000):  # the pickler batches by 1000, like here
            self.out += pickle.MARK
            for k, v in items[start:start + 1000]:
                self.dump(k)
                self.dump(v)
            self.out += pickle.SETITEMS
