"""Video: stylize a clip frame by frame without flicker (docs/video.md). Needs PyAV (``pip install 'adain[video]'``),
whose wheel ships FFmpeg with H.264 (libx264), and OpenCV for the optical flow."""

from .frames import FrameStylizer
from .pipeline import VideoResult, stylize_video
from .reader import ClipInfo, ClipReader, VideoLimits
from .temporal import DEFAULT_LEVEL, LEVELS, Stability, stability_level

__all__ = ["DEFAULT_LEVEL", "LEVELS", "ClipInfo", "ClipReader", "FrameStylizer", "Stability", "VideoLimits",
           "VideoResult", "stability_level", "stylize_video"]
