"""Animation sequences: per-frame cameras, frame sources, resumable rendering to PNGs, and video. Names are
imported from their module on first use."""

from ..lazy_exports import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "cameras": ["CameraTrack", "FixedCamera", "LabelCamera", "OrbitCamera", "camera_track", "load_camera_labels",
                "orbit_angles", "video_conditioning_label"],
    "render": ["FlameSequenceSource", "FrameSource", "MeshFolderSource", "SequenceInterrupted", "SequenceResult",
               "StaticMeshSource", "VertexArraySource", "frame_name", "frame_seed", "parse_frame_range",
               "render_sequence", "sequence_source", "settings_differ"],
    "video": ["check_fps", "count_video_frames", "write_video"],
})
