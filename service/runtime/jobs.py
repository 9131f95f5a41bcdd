"""The work a request hands to a worker, the ticket it waits on, and how that work can fail.

"Prepared" means one thing in the service, as in ``adain.images.prepare``: an image resized to the size the
networks see it at (``content_size``, or ``style_size`` times ``style_scale``). Checking a request's arguments is
``api.intake`` (``plan_job``, then ``render_job`` through ``adain.stylizer.Stylization.checked``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from torch import Tensor

from adain.images import prepared_size, scaled_size
from adain.stylizer import ColorMode, Stylization


def prepared_pixels(hw: tuple[int, int], size: int) -> int:
    """Pixels of an image of ``hw`` (H, W) once resized to a shorter side of ``size`` (0: as it is)."""
    h, w = prepared_size(hw, size, False)
    return h * w


def style_pixels(hw: tuple[int, int], style_size: int, style_scale: float) -> int:
    """Pixels of a style image of ``hw`` (H, W) as the encoder sees it: at ``style_size`` times ``style_scale``."""
    return prepared_pixels(hw, scaled_size(hw, style_size, style_scale))


def stats_pixels(hw: tuple[int, int], style_size: int, modes: tuple[ColorMode, ...]) -> int:
    """What encoding a style of ``hw`` (H, W) for each of ``modes`` costs: its prepared pixels, once per mode."""
    return prepared_pixels(hw, style_size) * len(modes)


@dataclass
class RenderJob(Stylization):
    """A stylization the service runs (built by ``api.intake.render_job``): its styles are decoded images or stored
    statistics; jobs whose contents have one size run as one batch."""

    tile: int = field(default=0, init=False)  # set by the worker: the tile side it ran with, 0 when whole

    @property
    def batch_key(self) -> tuple[int, ...]:
        """Jobs with equal keys run as one batch."""
        return tuple(self.content.shape)

    @property
    def pixels(self) -> int:
        """What the networks will see: the content, and the styles still to encode, as prepared."""
        styles = [style_pixels(tuple(ref.image.shape[-2:]), self.style_size, self.style_scale) for ref in self.styles
                  if ref.image is not None]
        return self.content.shape[-1] * self.content.shape[-2] + sum(styles)


@dataclass
class StatsJob:
    """Encode a style image once, for each colour mode (an upload to the style store)."""

    image: Tensor  # decoded style (3, H, W)
    style_size: int
    modes: tuple[ColorMode, ...]

    @property
    def pixels(self) -> int:
        """What the encoder will see: the style, as prepared, once per mode."""
        return stats_pixels(tuple(self.image.shape[-2:]), self.style_size, self.modes)


@dataclass(eq=False)  # compared and hashed by identity
class Ticket:
    """A job in a worker's queue; the request awaits ``future``. Times are event-loop seconds."""

    work: RenderJob | StatsJob
    future: asyncio.Future
    enqueued: float
    deadline: float
    queue_s: float = 0.0
    model_s: float = 0.0
    batch: int = 0
    pixels: int = field(init=False)  # the work's size, as the cost model sees it

    def __post_init__(self) -> None:
        self.pixels = self.work.pixels

    def settle(self, outcome: object) -> None:
        """Complete the future with a result, or an exception instance; no-op when it is done already."""
        if self.future.done():
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)


class DeadlineExceeded(Exception):
    """The request's deadline passed before its turn, or while it ran: the work was dropped."""


class Abandoned(Exception):
    """Raised at a safe point of the model's work when nobody waits for its result any more."""


class OutOfDeviceMemory(Exception):
    """A single request did not fit in the device's memory, even alone."""

    def __init__(self, device: str, pixels: int) -> None:
        super().__init__(f"{pixels} pixels do not fit in the memory of {device}")
        self.device, self.pixels = device, pixels

    def __reduce__(self) -> tuple:  # pickled between Ray replicas
        return OutOfDeviceMemory, (self.device, self.pixels)


class WorkerFailed(Exception):
    """The worker holding the request died."""
