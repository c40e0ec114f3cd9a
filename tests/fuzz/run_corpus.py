"""Runs cases of the fuzz corpus through the real front ends, each in a child process forked from this one (torch
and the engine are imported once, here), under a memory and a time limit; prints one JSON line per case.

    python tests/fuzz/run_corpus.py MANIFEST [--only NAME ...] [--part K/N]

A child runs the `next3d` command line (info, convert) exactly as the console script does, or the reader a render
calls, with the command line's handling: a Next3DError is `error: <message>` on stderr and exit code 2, anything
else a traceback and exit code 1. Each result: name, code, stderr, stdout (its end), seconds, peak_mb (the child's
peak resident memory, torch included), growth_mb (peak minus the child's memory when it started), timed_out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TIME_LIMIT_S = 10.0
ADDRESS_SPACE_CAP = 3 << 30   # a child may map this much beyond what it inherits; the test checks far less

import torch  # noqa: E402 - imported once, before forking

# One thread per child: on a busy machine torch's thread pool makes small operations wait for a descheduled core,
# which would measure the machine rather than the reader.
torch.set_num_threads(1)

from core.cli import main as cli  # noqa: E402
from core.errors import Next3DError  # noqa: E402
from core.flame.animation import load_sequence, read_obj_sequence  # noqa: E402
from core.flame.official import read_obj_uvs, read_official_flame  # noqa: E402
from core.io.generator_io import load_generator  # noqa: E402
from core.io.mesh_files import read_mesh_input  # noqa: E402
from core.portrait.landmarks import read_landmarks_file  # noqa: E402


def _flame(model: str, static: str = "", dynamic: str = "", deca: str = "") -> None:
    read_official_flame(model, static or None, dynamic or None, deca or None, n_shape=4)


def _vertex_sequence(path: str) -> None:
    from core.sequence.render import sequence_source

    source = sequence_source(path)
    source.mesh(len(source) - 1)   # the last frame: a memory-mapped array is read to its end


def _cameras(path: str) -> None:
    from core.sequence.cameras import load_camera_labels

    load_camera_labels(path)


def _flame_npz(path: str) -> None:
    from core.flame.model_data import load_model_data

    load_model_data(path)


READERS = {
    "load": load_generator,
    "vertex-seq": _vertex_sequence,
    "camera": _cameras,
    "flame-npz": _flame_npz,
    "flame": _flame,
    "animation": load_sequence,
    "mesh": read_mesh_input,
    "mesh-sequence": read_obj_sequence,
    "landmarks": read_landmarks_file,
    "uv-obj": read_obj_uvs,
}


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _child(case: dict, folder: Path, out_fd: int, err_fd: int, meta_fd: int) -> None:
    """Runs in the forked child; never returns."""
    code = 1
    try:
        os.write(meta_fd, f"{_rss_mb()}".encode())
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        limit = _vm_bytes() + ADDRESS_SPACE_CAP
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        args = [str(folder / a) if a else "" for a in case["args"]]
        if case["front"] in ("info", "convert"):
            try:
                cli.main(args=[case["front"], *args], prog_name="next3d", standalone_mode=True)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:
            try:
                READERS[case["front"]](*args)
                code = 0
            except Next3DError as exc:
                print(f"error: {exc}", file=sys.stderr)
                code = 2
    except BaseException:  # noqa: BLE001 - what the interpreter would print for an uncaught exception
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def run_case(case: dict, folder: Path) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryFile() as meta:
        sys.stdout.flush()
        sys.stderr.flush()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:
            _child(case, folder, out.fileno(), err.fileno(), meta.fileno())
        timed_out = False
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - start > TIME_LIMIT_S:
                timed_out = True
                os.kill(pid, signal.SIGKILL)
                _, status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.005)
        seconds = time.monotonic() - start
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        meta.seek(0)
        base_mb = float(meta.read() or 0)
    code = os.waitstatus_to_exitcode(status)
    peak_mb = usage.ru_maxrss / 1024
    return {"name": case["name"], "code": code, "stderr": stderr, "stdout": stdout[-400:], "seconds": seconds,
            "peak_mb": peak_mb, "growth_mb": peak_mb - base_mb, "timed_out": timed_out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest")
    parser.add_argument("--only", nargs="*", default=None, help="case names to run (default: all)")
    parser.add_argument("--part", default="1/1", help="K/N: run every N-th case starting at the K-th")
    opts = parser.parse_args()
    manifest = Path(opts.manifest)
    cases = json.loads(manifest.read_text())["cases"]
    if opts.only:
        cases = [c for c in cases if c["name"] in opts.only or c["name"].split("@")[0] in opts.only]
    k, n = (int(x) for x in opts.part.split("/"))
    for case in cases[k - 1::n]:
        print(json.dumps(run_case(case, manifest.parent)), flush=True)


if __name__ == "__main__":
    main()
