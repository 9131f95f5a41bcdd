"""Exceptions with messages meant for users (the CLI prints them as one line)."""

from __future__ import annotations

import sys


def clip(value: object, limit: int = 64) -> str:
    """``value`` as an error message may echo it: as text, cut in the middle to at most ``limit`` characters."""
    text = str(value)
    if len(text) <= limit:
        return text
    marker = f"...({len(text)} characters)..."
    keep = max(2, limit - len(marker))
    return f"{text[: keep // 2]}{marker}{text[-(keep - keep // 2):]}"


class AdainError(Exception):
    """Base class of the errors a user can cause and fix."""


class ImageError(AdainError):
    """An image could not be read or is not acceptable."""


class UnsupportedImage(ImageError):
    """The data is not an image in an accepted format (judged by content)."""


class ImageTooLarge(ImageError):
    """The image has more pixels than allowed (checked from its header, before decoding)."""


class WeightsError(AdainError):
    """A weight file is missing, corrupt or does not fit the architecture."""


class InputError(AdainError, ValueError):
    """Arguments that do not make sense together (weights, alpha, masks...)."""


def exit_status(prog: str, exc: AdainError | KeyboardInterrupt) -> int:
    """Report ``exc`` on stderr as ``prog``'s one-line error; the exit status: 2 for an AdainError, 130 for Ctrl-C."""
    if isinstance(exc, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return 2


class VideoError(AdainError):
    """A clip could not be read or written, or stopped being readable halfway."""


class VideoTooLarge(VideoError):
    """The clip is longer, larger or bigger than allowed (checked from its header, before decoding)."""
