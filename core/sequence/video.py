"""Writing an H.264 video from frame PNGs with the ffmpeg binary that imageio-ffmpeg bundles, checked before it
is given its name."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Iterable, List, Optional, Union

import numpy as np

from ..errors import InputError, OutputError
from ..io.atomic import new_file_mode

PathLike = Union[str, os.PathLike]
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")
MAX_FPS = 1000.0


def _even(pixels: np.ndarray) -> np.ndarray:
    """yuv420p needs even sides: repeat the last row/column where a side is odd."""
    h, w = pixels.shape[:2]
    if h % 2 or w % 2:
        pixels = np.pad(pixels, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return pixels


def _rgb(pixels: np.ndarray) -> np.ndarray:
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.shape[2] == 4:
        pixels = pixels[..., :3]
    if pixels.dtype != np.uint8:
        raise InputError(f"Video frames must be 8-bit images; got {pixels.dtype}.")
    return np.ascontiguousarray(pixels)


def check_fps(fps) -> float:
    """The frame rate as a float, refused unless 0 < fps <= MAX_FPS (ffmpeg fails late, or not at all, on others)."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        raise InputError(f"The video frame rate must be a number; got {fps!r}.") from None
    if not 0 < value <= MAX_FPS:   # also refuses NaN
        raise InputError(f"The video frame rate must be above 0 and at most {MAX_FPS:g} frames per second; got "
                         f"{fps!r}.")
    return value


def _rate(fps: float) -> str:
    """ffmpeg's -r as a fraction, so 29.97 is NTSC's 30000/1001 and small rates do not round to 0."""
    rate = Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def remove_stale_video_temporaries(out_path: Path, min_age_s: float = 60.0) -> None:
    """Delete the temporaries that an encode of `out_path` killed part-way left beside it (`.<stem>-XXXXXXXX<suffix>`,
    as write_video names them). An encode in progress writes its temporary every second or more often, so one not
    touched for `min_age_s` is a leftover (0: every one, for a caller that holds the folder alone)."""
    pattern = re.compile(re.escape(f".{out_path.stem}-") + r"[a-z0-9_]{8}" + re.escape(out_path.suffix) + "$")
    now = time.time()
    try:
        entries = list(out_path.parent.iterdir())
    except OSError:
        return
    for p in entries:
        if pattern.match(p.name):
            try:
                if now - p.stat().st_mtime >= min_age_s:
                    p.unlink()
            except OSError:
                pass


def _ffmpeg(args: List[str], stdin=None, stdout=subprocess.DEVNULL, stderr=None) -> subprocess.Popen:
    import imageio_ffmpeg

    # Its own process group (as imageio-ffmpeg does), so Ctrl-C reaches only us and we stop it; SIGPIPE and SIGXFSZ
    # stay ignored as in Python, so a full disk or a size limit is an error ffmpeg reports, not a silent death.
    kwargs = {"creationflags": 0x00000200} if os.name == "nt" else {"start_new_session": True,
                                                                      "restore_signals": False}
    return subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-hide_banner", *args], stdin=stdin,
                            stdout=stdout, stderr=stderr, **kwargs)


def _last_line(fh) -> str:
    fh.seek(0)
    lines = [line.strip() for line in fh.read()[-4000:].decode("utf-8", "replace").splitlines() if line.strip()]
    return re.sub(r"^\[[^]]*\]\s*", "", lines[-1]) if lines else ""


def count_video_frames(path: PathLike) -> int:
    """The number of video frames (packets) in the file, read without decoding; InputError if ffmpeg cannot read it
    to the end (a truncated or damaged file)."""
    with tempfile.TemporaryFile() as err:
        proc = _ffmpeg(["-v", "error", "-xerror", "-i", os.fspath(path), "-map", "0:v:0", "-c", "copy", "-f",
                        "framecrc", "-"], stdout=subprocess.PIPE, stderr=err)
        count = sum(1 for line in proc.stdout if line.strip() and not line.startswith(b"#"))
        proc.stdout.close()
        code = proc.wait()
        if code != 0:
            why = _last_line(err) or f"ffmpeg exit code {code}"
            raise InputError(f"The video {Path(path).name} cannot be read to its end ({why}).")
    return count


def _encode_failure(out_path: Path, frames_dir: Path, why: str, exc: Optional[OSError] = None) -> OutputError:
    full = exc is not None and exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT) or \
        any(w in why.lower() for w in ("no space", "too large", "quota"))
    fix = "free some disk space" if full else "make sure the video's folder is writable and has free space"
    return OutputError(f"Could not write the video {out_path} ({why}); nothing was written under that name. The frames "
                       f"are kept in {frames_dir}: {fix}, then run the same command again to write the video.")


def write_video(frame_paths: Iterable[PathLike], out_path: PathLike, fps: float = 30, crf: int = 17) -> Path:
    """Encode the PNGs, in the given order, as libx264 yuv420p (odd sides padded to even) at `fps`.

    The file is encoded under a temporary name in the same folder, checked (ffmpeg must exit cleanly and the file
    must read back with one frame per PNG), and only then renamed to `out_path`, so a failed or interrupted encode
    (a full disk, a killed process) never leaves a broken video under that name; a failure is an OutputError.
    Frames are read one at a time (memory stays flat)."""
    import imageio.v3 as iio

    paths = [Path(p) for p in frame_paths]
    out_path = Path(out_path)
    if not paths:
        raise InputError("No frames to put in the video; render the sequence first.")
    fps = check_fps(fps)
    if out_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputError(f"The video name {out_path.name!r} must end in one of {', '.join(VIDEO_SUFFIXES)}.")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise InputError(f"{len(missing)} frames of the video are missing (first: {missing[0]}); render them "
                         "before writing the video.")
    frames_dir = paths[0].parent
    first = _even(_rgb(iio.imread(paths[0])))
    height, width = first.shape[:2]
    remove_stale_video_temporaries(out_path)
    try:
        fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}-", suffix=out_path.suffix)
        os.close(fd)
    except OSError as exc:
        raise _encode_failure(out_path, frames_dir, exc.strerror or str(exc), exc) from None
    proc = None
    try:
        with tempfile.TemporaryFile() as err:
            proc = _ffmpeg(["-y", "-v", "error", "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{width}x{height}",
                            "-pix_fmt", "rgb24", "-r", _rate(fps), "-i", "-", "-an", "-vcodec", "libx264",
                            "-pix_fmt", "yuv420p", "-crf", str(int(crf)), "-preset", "medium", "-movflags",
                            "+faststart", tmp], stdin=subprocess.PIPE, stderr=err)
            try:
                for k, path in enumerate(paths):
                    pixels = first if k == 0 else _even(_rgb(iio.imread(path)))
                    if pixels.shape[:2] != (height, width):
                        raise InputError(f"Frame {path.name} is {pixels.shape[1]}x{pixels.shape[0]} but the video "
                                         f"is {width}x{height}; all frames of a video must have the same size.")
                    proc.stdin.write(pixels.tobytes())
                proc.stdin.close()
            except (BrokenPipeError, OSError):
                pass   # ffmpeg stopped reading: its exit code and message say why
            code = proc.wait()
            if code != 0:
                why = _last_line(err) or f"ffmpeg exit code {code}"
                raise _encode_failure(out_path, frames_dir, why)
        try:
            count = count_video_frames(tmp)
        except InputError as exc:
            raise _encode_failure(out_path, frames_dir, f"the encoded file does not read back: {exc}") from None
        if count != len(paths):
            raise _encode_failure(out_path, frames_dir, f"the encoded file holds {count} of {len(paths)} frames")
        try:
            os.chmod(tmp, new_file_mode())
            os.replace(tmp, out_path)
        except OSError as exc:
            raise _encode_failure(out_path, frames_dir, exc.strerror or str(exc), exc) from None
    except BaseException:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return out_path
