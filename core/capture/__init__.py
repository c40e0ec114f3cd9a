"""Performance capture: a face video (or a folder of images, or a Live Link Face recording) -> the project's FLAME
animation (core/flame/animation.py), with one FLAME fit over the whole clip (docs/capture.md). `track_clip` does it
all; `next3d track` is its command line. Names are imported from their module on first use."""

from ..lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "arkit": ["live_link_sequence", "read_live_link_csv"],
    "fit": ["ClipFit", "FitOptions", "Smoothness", "fit_clip"],
    "frames": ["FrameSource", "open_frames"],
    "output": ["TrackResult", "write_result"],
    "pipeline": ["track_clip"],
    "tracking": ["LandmarkTrack", "track_landmarks"],
})
