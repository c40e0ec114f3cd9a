"""Animation sequences: per-frame cameras, frame sources, resumable rendering to PNGs, and video."""

from .cameras import (CameraTrack, FixedCamera, LabelCamera, OrbitCamera, camera_track, load_camera_labels,
                      orbit_angles, video_conditioning_label)
from .render import (FlameSequenceSource, FrameSource, MeshFolderSource, SequenceInterrupted, SequenceResult, StaticMeshSource,
                     VertexArraySource, frame_name, frame_seed, parse_frame_range, render_sequence, sequence_source,
                     settings_differ)
from .video import write_video

__all__ = [
    "CameraTrack", "FixedCamera", "LabelCamera", "OrbitCamera", "camera_track", "load_camera_labels", "orbit_angles",
    "video_conditioning_label", "FlameSequenceSource", "FrameSource", "MeshFolderSource", "SequenceInterrupted", "SequenceResult",
    "StaticMeshSource", "VertexArraySource", "frame_name", "frame_seed", "parse_frame_range", "render_sequence",
    "sequence_source", "settings_differ", "write_video",
]
