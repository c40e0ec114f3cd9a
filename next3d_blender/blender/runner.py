"""Running engine jobs from Blender: in a worker process with results drained on the main thread by a
bpy.app.timers callback (interactive), or synchronously (background mode, `blender -b`, where no timer fires).

One task runs at a time. A task's replies are handled on the main thread by `Task.handle`, which reports progress
(the window manager's progress bar and the status bar when there is a UI, printed lines in background mode) and
hands images and meshes to the operator's callbacks. Errors: a Next3DError from the engine is a user error with a
clear message; anything else in the worker, or the worker dying, becomes a WorkerFailure (also a Next3DError, so
operators report it) carrying the worker's last output, and Blender carries on.
"""

from __future__ import annotations

import sys
from typing import Callable, Dict, List, Optional

import bpy
import numpy as np

from ..core.errors import Next3DError
from ..engine.job_specs import Job
from ..engine.worker import WorkerClient, WorkerError, exit_message, iter_until_finished

POLL_INTERVAL = 0.1


class WorkerFailure(Next3DError):
    """The engine failed for a reason that is not bad input (a bug, a crash, a missing dependency)."""


class Task:
    """A job and what to do with its replies."""

    def __init__(self, job: Optional[Job], arrays: Dict[str, np.ndarray], title: str,
                 on_image: Optional[Callable[[dict, Dict[str, np.ndarray]], None]] = None,
                 on_mesh: Optional[Callable[[dict, Dict[str, np.ndarray]], None]] = None,
                 on_done: Optional[Callable[["Task"], None]] = None):
        self.job, self.arrays, self.title = job, arrays, title
        self.on_image, self.on_mesh, self.on_done = on_image, on_mesh, on_done
        self.total = 0
        self.done = 0
        self.status = "starting"
        self.warnings: List[str] = []
        self.error: Optional[str] = None
        self.error_is_user = True
        self.summary: dict = {}
        self.finished = False
        self.cancelled = False
        self.cancel_requested = False
        self._progress_open = False
        self.reported = 0   # how many warnings the modal operator has reported already

    @property
    def kind(self) -> str:
        return self.job.kind if self.job is not None else ""

    # -- UI feedback
    @staticmethod
    def _ui():
        if bpy.app.background:
            return None, None
        ctx = bpy.context
        return getattr(ctx, "window_manager", None), getattr(ctx, "workspace", None)

    def _say(self, text: str) -> None:
        self.status = text
        wm, workspace = self._ui()
        if wm is None:
            print(f"Next3D: {text}", flush=True)
            return
        if workspace is not None:
            try:
                workspace.status_text_set(f"Next3D: {text}")
            except (AttributeError, RuntimeError):
                pass
        for window in wm.windows:
            for area in window.screen.areas:
                if area.type in ("VIEW_3D", "IMAGE_EDITOR"):
                    area.tag_redraw()

    def _progress(self, value: Optional[float]) -> None:
        wm, _ = self._ui()
        if wm is None:
            return
        try:
            if value is None:
                if self._progress_open:
                    wm.progress_end()
                    self._progress_open = False
            else:
                if not self._progress_open:
                    wm.progress_begin(0, max(1, self.total))
                    self._progress_open = True
                wm.progress_update(value)
        except (AttributeError, RuntimeError):
            pass

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._progress(None)
        wm, workspace = self._ui()
        if workspace is not None:
            try:
                workspace.status_text_set(None)
            except (AttributeError, RuntimeError):
                pass
        if self.on_done is not None:
            self.on_done(self)

    # -- replies
    def handle(self, header: dict, arrays: Dict[str, np.ndarray]) -> None:
        kind = header.get("type")
        if kind == "begin":
            self.total = int(header.get("total", 0))
            self.done = int(header.get("skipped", 0))
            extra = f", {self.done} already on disk" if self.done else ""
            what = f"{self.total} step(s)" if self.kind == "invert" else f"{self.total} frame(s){extra}"
            self._say(f"{self.title}: {what} ({header.get('description', '')})")
            self._progress(self.done)
        elif kind == "frame":
            self.done = int(header.get("done", self.done + 1))
            self._say(f"{self.title}: frame {header.get('number')} ({self.done}/{self.total})")
            self._progress(self.done)
        elif kind == "step":
            self.done = int(header.get("done", self.done + 1))
            self.total = int(header.get("total", self.total))
            self._say(f"{self.title}: step {self.done}/{self.total}")
            self._progress(self.done)
        elif kind == "image":
            if self.on_image is not None:
                self.on_image(header, arrays)
        elif kind == "mesh":
            self.done = int(header.get("done", self.done + 1))
            self._say(f"{self.title}: mesh at frame {header.get('number')} ({self.done}/{self.total})")
            self._progress(self.done)
            if self.on_mesh is not None:
                self.on_mesh(header, arrays)
        elif kind == "warning":
            self.warnings.append(str(header.get("message", "")))
            print(f"Next3D warning: {header.get('message')}", file=sys.stderr, flush=True)
        elif kind in ("done", "cancelled"):
            self.summary = header
            self.cancelled = kind == "cancelled"
            if self.cancelled:
                missing = len(header.get("missing", []))
                self._say(f"{self.title}: stopped; {missing} frame(s) still to render (run again to resume)")
            else:
                self._say(f"{self.title}: done")
        elif kind == "error":
            self.error = str(header.get("message", "unknown error"))
            self.error_is_user = bool(header.get("user"))
            if header.get("traceback"):
                print(header["traceback"], file=sys.stderr, flush=True)
        elif kind == "exit":
            if not self.finished and self.error is None:
                self.error = exit_message(header.get("returncode"), header.get("stderr") or "",
                                          header.get("python") or "")
                self.error_is_user = False
            self._finish()
        elif kind == "finished":
            self._finish()

    def raise_error(self) -> None:
        if self.error is not None:
            raise (Next3DError(self.error) if self.error_is_user else WorkerFailure(self.error))


# ------------------------------------------------------------------------------------------------ state

_state = {"task": None, "client": None, "render_client": None, "python": None}


def active_task() -> Optional[Task]:
    return _state["task"]


def is_busy() -> bool:
    task = _state["task"]
    return task is not None and not task.finished


def _client(python: str) -> WorkerClient:
    client = _state["client"]
    if client is not None and (client.python != python or not client.alive):
        client.stop()
        client = None
    if client is None:
        client = WorkerClient(python)
        _state["client"] = client
    return client


def worker_python(prefs) -> str:
    return bpy.path.abspath(prefs.python_path) if prefs.python_path else sys.executable


def start(task: Task, prefs, synchronous: bool) -> Task:
    """Run `task`: synchronously (returns when done; raises Next3DError on failure) or in the worker (returns at
    once; replies are drained by a timer, or by calling `drain()`)."""
    if is_busy():
        raise Next3DError("A Next3D job is already running; wait for it or cancel it (Esc, or the Cancel button).")
    _state["task"] = task
    if synchronous:
        try:
            if prefs.python_path:
                _run_in_worker_blocking(task, worker_python(prefs))
            else:
                _run_in_process(task)
        finally:
            task._finish()
        task.raise_error()
        return task
    try:
        _client(worker_python(prefs)).submit(task.job.to_dict(), task.arrays)
    except WorkerError as exc:
        task.error, task.error_is_user = str(exc), False
        task._finish()
        task.raise_error()
    if not bpy.app.timers.is_registered(drain):
        bpy.app.timers.register(drain, first_interval=POLL_INTERVAL)
    return task


def _run_in_process(task: Task) -> None:
    _check_torch()
    from ..engine import jobs

    def should_stop() -> bool:
        return task.cancel_requested

    jobs.run_job(task.job, task.arrays, lambda kind, payload, arrays: task.handle(dict(payload or {}, type=kind),
                                                                                   arrays or {}), should_stop)


def _run_in_worker_blocking(task: Task, python: str) -> None:
    client = _client(python)
    try:
        client.submit(task.job.to_dict(), task.arrays)
        for header, arrays in iter_until_finished(client):
            task.handle(header, arrays)
    except WorkerError as exc:
        task.error, task.error_is_user = str(exc), False
    except KeyboardInterrupt:
        client.cancel()
        for header, arrays in iter_until_finished(client, timeout=600):
            task.handle(header, arrays)


def run_now(job: Job, arrays: Dict[str, np.ndarray], prefs, on_reply: Callable[[dict, Dict[str, np.ndarray]], None],
            should_stop: Callable[[], bool], in_process: bool) -> dict:
    """Run `job` to its end from the calling thread (the render engine: Blender's render thread with a UI, the main
    thread under -b), handing every reply to `on_reply`; returns the job's summary ("cancelled": True when
    `should_stop` stopped it). In this process when `in_process` and no Worker Python is set, else in the render
    worker (a process of its own, so a render never waits on a sidebar job). Raises Next3DError (user errors) or
    WorkerFailure."""
    if in_process and not prefs.python_path:
        _check_torch()
        from ..engine import jobs

        summary: dict = {}

        def emit(kind, payload, out_arrays):
            header = dict(payload or {}, type=kind)
            if kind in ("done", "cancelled"):
                summary.update(header, cancelled=kind == "cancelled")
            on_reply(header, out_arrays or {})

        jobs.run_job(job, arrays, emit, should_stop)
        return summary
    python = worker_python(prefs)
    client = _state.get("render_client")
    if client is not None and (client.python != python or not client.alive):
        client.stop()
        client = None
    if client is None:
        client = _state["render_client"] = WorkerClient(python)
    try:
        client.submit(job.to_dict(), arrays)
        summary, error, cancelling = {}, None, False
        while True:
            msg = client.wait(timeout=0.1)
            if msg is None:
                if should_stop() and not cancelling:
                    client.cancel()
                    cancelling = True
                continue
            header, out_arrays = msg
            kind = header.get("type")
            if kind == "error":
                error = (Next3DError if header.get("user") else WorkerFailure)(str(header.get("message")))
            elif kind == "exit":
                _state["render_client"] = None
                raise WorkerFailure(exit_message(header.get("returncode"), header.get("stderr") or "", python))
            elif kind == "finished":
                break
            else:
                if kind in ("done", "cancelled"):
                    summary.update(header, cancelled=kind == "cancelled")
                on_reply(header, out_arrays)
    except WorkerError as exc:
        raise WorkerFailure(str(exc)) from None
    if error is not None:
        raise error
    return summary


def _check_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise Next3DError("torch cannot be imported in Blender's Python. Set 'Worker Python' in the Next3D add-on "
                          "preferences to a Python environment that has torch (e.g. the project's "
                          ".venv/bin/python).") from None


def drain() -> Optional[float]:
    """Timer callback (also callable directly): hand the worker's replies to the active task on the main thread.
    Returns the next interval, or None (unregister) when nothing is running."""
    task, client = _state["task"], _state["client"]
    if task is None or task.finished or client is None:
        return None
    for header, arrays in client.poll():
        try:
            task.handle(header, arrays)
        except Exception as exc:  # noqa: BLE001 - a failing callback must not kill the timer silently
            task.error, task.error_is_user = f"{type(exc).__name__}: {exc}", False
            client.cancel()
    if task.finished:
        if client.proc is not None and not client.alive:
            _state["client"] = None
        return None
    return POLL_INTERVAL


def cancel() -> bool:
    """Ask the running job to stop after the current frame; frames on disk stay. True if something was running."""
    task = _state["task"]
    if task is None or task.finished:
        return False
    task.cancel_requested = True
    client = _state["client"]
    if client is not None:
        client.cancel()
    return True


def shutdown() -> None:
    """Stop the timer and the worker (unregister, or 'Release Worker')."""
    if bpy.app.timers.is_registered(drain):
        bpy.app.timers.unregister(drain)
    task = _state["task"]
    if task is not None and not task.finished:
        task.cancel_requested = True
        task.error = task.error or "The job was stopped because the add-on was disabled."
        task._finish()
    for name in ("client", "render_client"):
        client = _state.get(name)
        if client is not None:
            client.stop()
    _state.update(task=None, client=None, render_client=None)
