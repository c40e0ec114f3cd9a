"""The engine's worker process and the Blender side's handle on it. No bpy here.

Interactive Blender must never wait on torch, so jobs (jobs.py) run in a separate Python process: the interpreter
set in the add-on preferences (Blender's own when torch is importable there, or an external environment such as
the project's .venv). The add-on folder's parent goes on the child's sys.path, so the child imports the add-on's
package (whose __init__ loads no bpy), this `engine` package and the vendored engine, `<package>.core`.

Wire format, both directions, over the child's stdin/stdout (binary): a message is

    b"N3DW" | uint32 little-endian header length | header (UTF-8 JSON) | raw array bytes

where the header is {"type": ..., ...payload, "arrays": [[name, dtype, shape], ...]} and the arrays follow in that
order, C-contiguous. No pickle: the two sides may run different numpy versions.

Requests: {"type": "job", "job": {...}} + arrays (the job as job_specs.py's `to_dict` writes it), {"type":
"cancel"}, {"type": "quit"}.
Replies: whatever the job emits ("begin", "frame", "image", "mesh", "warning", "done", "cancelled", "pong"), then
{"type": "finished"}; a failure is {"type": "error", "message", "user": bool, "traceback"} followed by "finished".
The child's own stdout is redirected to stderr at start-up, so stray prints cannot corrupt the channel; the parent
keeps the last lines of the child's stderr for error reports. If the child dies, the parent's reader sees EOF and
queues {"type": "exit", "returncode", "stderr"}.
"""

from __future__ import annotations

import collections
import json
import os
import queue
import struct
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

MAGIC = b"N3DW"
MAX_HEADER = 16 << 20
PACKAGE_DIR = Path(__file__).resolve().parents[1]     # the add-on's package folder
# The child's first lines: a package its Python lacks (numpy, torch) is one marked line on stderr and exit code
# MISSING_EXIT, which the parent turns into one sentence (`exit_message`), not a traceback.
MISSING_MARK = "next3d-worker-missing-module:"
MISSING_EXIT = 3
_BOOT = ("import sys, importlib\nsys.path.insert(0, sys.argv[1])\ntry:\n"
         "    w = importlib.import_module(sys.argv[2] + '.engine.worker'); w.preflight()\n"
         "except ImportError as e:\n"
         f"    sys.stderr.write('{MISSING_MARK} %s\\n' % (e.name or e)); sys.exit({MISSING_EXIT})\n"
         "w.main()")

Message = Tuple[dict, Dict[str, np.ndarray]]


class WorkerError(Exception):
    """The worker process could not be started or stopped unexpectedly."""


# ------------------------------------------------------------------------------------------------ wire format

def encode(header: dict, arrays: Optional[Dict[str, np.ndarray]] = None) -> bytes:
    arrays = arrays or {}
    spec, blobs = [], []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.kind not in "biuf":
            raise TypeError(f"array {name!r} has dtype {a.dtype}; only numeric arrays cross the wire")
        spec.append([name, a.dtype.str, list(a.shape)])
        blobs.append(a.tobytes())
    head = json.dumps(dict(header, arrays=spec)).encode("utf-8")
    return b"".join([MAGIC, struct.pack("<I", len(head)), head, *blobs])


def _read_exact(stream, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("the stream ended inside a message")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_message(stream) -> Optional[Message]:
    """The next message, or None at a clean end of stream."""
    first = stream.read(4)
    if not first:
        return None
    if len(first) < 4:
        first += _read_exact(stream, 4 - len(first))
    if first != MAGIC:
        raise ValueError(f"not a worker message (starts with {first!r})")
    (size,) = struct.unpack("<I", _read_exact(stream, 4))
    if size > MAX_HEADER:
        raise ValueError(f"message header of {size} bytes is too large")
    header = json.loads(_read_exact(stream, size).decode("utf-8"))
    arrays = {}
    for name, dtype, shape in header.pop("arrays", []):
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        arrays[name] = np.frombuffer(_read_exact(stream, count * dt.itemsize), dtype=dt).reshape(shape).copy()
    return header, arrays


def exit_message(returncode, stderr: str, python: str) -> str:
    """One sentence for a worker that stopped: the package its Python could not import, else the exit code and the
    last lines of its stderr."""
    lines = (stderr or "").strip().splitlines()
    for line in reversed(lines):
        if line.startswith(MISSING_MARK) or f"worker: {MISSING_MARK}" in line:
            name = line.split(MISSING_MARK, 1)[1].strip()
            return (f"The worker's Python ({python}) cannot import {name}: set 'Worker Python' in the Next3D add-on "
                    "preferences to an environment with torch and the engine's requirements (e.g. the project's "
                    f".venv/bin/python), or install {name} there.")
    tail = lines[-6:]
    return (f"The Next3D worker stopped unexpectedly (exit code {returncode})"
            + (": " + " | ".join(tail) if tail else "."))


# ------------------------------------------------------------------------------------------------ child side

def preflight() -> None:
    """Import what every job needs before answering (ImportError names the missing package: see _BOOT)."""
    import torch  # noqa: F401

    from . import jobs  # noqa: F401

def main() -> None:
    """The worker loop (run in the child process)."""
    channel = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inbox: "queue.Queue[Optional[Message]]" = queue.Queue()
    cancel = threading.Event()
    lock = threading.Lock()

    def send(kind: str, payload: Optional[dict] = None, arrays: Optional[Dict[str, np.ndarray]] = None) -> None:
        data = encode(dict(payload or {}, type=kind), arrays)
        with lock:
            channel.write(data)

    def reader() -> None:
        stdin = sys.stdin.buffer
        try:
            while True:
                msg = read_message(stdin)
                if msg is None:
                    break
                if msg[0].get("type") == "cancel":
                    cancel.set()
                else:
                    inbox.put(msg)
        except (EOFError, ValueError, OSError):
            pass
        cancel.set()
        inbox.put(None)

    threading.Thread(target=reader, name="next3d-worker-reader", daemon=True).start()
    from ..core.errors import Next3DError
    from . import jobs

    send("ready", {"pid": os.getpid(), "python": sys.version.split()[0]})
    while True:
        msg = inbox.get()
        if msg is None or msg[0].get("type") == "quit":
            break
        header, arrays = msg
        if header.get("type") != "job":
            continue
        cancel.clear()
        try:
            jobs.run_job(header.get("job") or {}, arrays, send, cancel.is_set)
        except Next3DError as exc:
            send("error", {"message": str(exc), "user": True})
        except ImportError as exc:
            send("error", {"message": f"The worker's Python ({sys.executable}) cannot import {exc.name or exc}: set "
                           "'Worker Python' in the Next3D add-on preferences to an environment with torch and the "
                           "engine's requirements (e.g. the project's .venv/bin/python).", "user": True,
                           "traceback": traceback.format_exc()})
        except Exception as exc:  # noqa: BLE001 - reported to Blender with its traceback, the worker lives on
            send("error", {"message": f"{type(exc).__name__}: {exc}", "user": False,
                           "traceback": traceback.format_exc()})
        send("finished")
    channel.close()
    sys.stderr.flush()
    # The reader thread may be blocked on stdin; skip interpreter finalization rather than race it.
    os._exit(0)


# ------------------------------------------------------------------------------------------------ parent side

class WorkerClient:
    """A worker process driven from Blender's main thread: `submit` a job, `poll` replies (never blocks), or
    `wait` for one (background mode). A reader thread moves replies into a queue; another keeps the stderr tail."""

    def __init__(self, python: str, package_dir: Path = PACKAGE_DIR, env: Optional[Dict[str, str]] = None):
        self.python = str(python)
        self.package_dir = Path(package_dir)
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self.replies: "queue.Queue[Message]" = queue.Queue()
        self.stderr_tail: collections.deque = collections.deque(maxlen=60)
        self._write_lock = threading.Lock()
        self.busy = False

    # -- life cycle
    def start(self) -> None:
        if self.alive:
            return
        if not self.python or not Path(self.python).exists():
            raise WorkerError(f"The Python interpreter {self.python!r} for the Next3D worker does not exist. Set it "
                              "in the add-on preferences (leave it empty for Blender's own Python).")
        cmd = [self.python, "-u", "-c", _BOOT, str(self.package_dir.parent), self.package_dir.name]
        env = dict(os.environ if self.env is None else self.env)
        env.pop("PYTHONHOME", None)   # Blender's PYTHONHOME would confuse an external interpreter
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         cwd=str(self.package_dir.parent), env=env)
        except OSError as exc:
            raise WorkerError(f"Cannot start the Next3D worker with {self.python!r}: {exc}.") from None
        self.replies = queue.Queue()
        self._stderr_thread = threading.Thread(target=self._drain_stderr, args=(self.proc,), name="next3d-stderr",
                                               daemon=True)
        self._stderr_thread.start()
        threading.Thread(target=self._read, args=(self.proc,), name="next3d-replies", daemon=True).start()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _read(self, proc: subprocess.Popen) -> None:
        try:
            while True:
                msg = read_message(proc.stdout)
                if msg is None:
                    break
                self.replies.put(msg)
        except (EOFError, ValueError, OSError):
            pass
        code = proc.wait()
        stderr_thread = getattr(self, "_stderr_thread", None)
        if stderr_thread is not None:
            stderr_thread.join(timeout=2.0)     # its last lines (a missing package) belong in the exit message
        self.replies.put(({"type": "exit", "returncode": code, "stderr": "\n".join(self.stderr_tail),
                           "python": self.python}, {}))

    def _drain_stderr(self, proc: subprocess.Popen) -> None:
        for raw in iter(proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            print(f"next3d worker: {line}", file=sys.stderr, flush=True)

    # -- requests
    def _send(self, header: dict, arrays: Optional[Dict[str, np.ndarray]] = None) -> None:
        if not self.alive:
            raise WorkerError("The Next3D worker is not running.")
        data = encode(header, arrays)
        with self._write_lock:
            try:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            except (BrokenPipeError, OSError) as exc:
                raise WorkerError(f"The Next3D worker stopped accepting jobs ({exc}).") from None

    def submit(self, job: dict, arrays: Optional[Dict[str, np.ndarray]] = None) -> None:
        self.start()
        self._send({"type": "job", "job": job}, arrays)
        self.busy = True

    def cancel(self) -> None:
        if self.alive:
            try:
                self._send({"type": "cancel"})
            except WorkerError:
                pass

    def poll(self) -> List[Message]:
        out = []
        while True:
            try:
                msg = self.replies.get_nowait()
            except queue.Empty:
                break
            if msg[0].get("type") in ("finished", "exit"):
                self.busy = False
            out.append(msg)
        return out

    def wait(self, timeout: Optional[float] = None) -> Optional[Message]:
        try:
            msg = self.replies.get(timeout=timeout)
        except queue.Empty:
            return None
        if msg[0].get("type") in ("finished", "exit"):
            self.busy = False
        return msg

    def stop(self, timeout: float = 3.0) -> None:
        proc, self.proc = self.proc, None
        self.busy = False
        if proc is None:
            return
        if proc.poll() is None:
            try:
                proc.stdin.write(encode({"type": "quit"}))
                proc.stdin.flush()
                proc.stdin.close()
            except (BrokenPipeError, OSError, ValueError):
                pass
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                if stream is not None:
                    stream.close()
            except (OSError, ValueError):
                pass


def iter_until_finished(client: WorkerClient, timeout: Optional[float] = None) -> Iterable[Message]:
    """Blocking iteration over a job's replies up to "finished" (or the worker's exit)."""
    while True:
        msg = client.wait(timeout)
        if msg is None:
            raise WorkerError(f"The Next3D worker sent nothing for {timeout} s.")
        yield msg
        if msg[0].get("type") in ("finished", "exit"):
            return


if __name__ == "__main__":  # pragma: no cover - the worker is started through _BOOT
    main()
