"""The work a request hands to a worker, the ticket it waits on, and how that work can fail."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from torch import Tensor

from adain import ops
from adain.stylizer import ColorMode, model_input


@dataclass
class StyleRef:
    """One style of a request: stored statistics (each (C,), CPU), or the decoded image to encode."""

    stats: ops.Stats | None = None
    image: Tensor | None = None


@dataclass
class RenderJob:
    """One content image to stylize, prepared and validated (see ``adain.stylizer.prepare_content``)."""

    content: Tensor  # prepared content (3, H, W)
    styles: list[StyleRef]
    weights: Tensor  # (S,), summing to one
    alpha: float
    masks: Tensor | None  # (S, H, W) fitted to the content, or None
    preserve_color: ColorMode
    style_size: int
    model_input: Tensor = field(init=False)  # what the encoder sees
    tile: int = field(default=0, init=False)  # set by the worker: the tile side it ran with, 0 when whole

    def __post_init__(self) -> None:
        self.model_input = model_input(self.content, self.preserve_color)

    @property
    def batch_key(self) -> tuple[int, ...]:
        """Jobs with equal keys run as one batch."""
        return tuple(self.model_input.shape)


@dataclass
class StatsJob:
    """Encode a style image once, for each colour mode (an upload to the style store)."""

    image: Tensor  # decoded style (3, H, W)
    style_size: int
    modes: tuple[ColorMode, ...]


@dataclass
class Ticket:
    """A job in a worker's queue; the request awaits ``future``. Times are event-loop seconds."""

    work: RenderJob | StatsJob
    future: asyncio.Future
    enqueued: float
    deadline: float
    queue_s: float = 0.0
    model_s: float = 0.0
    batch: int = 0

    def settle(self, outcome: object) -> None:
        """Complete the future with a result, or an exception instance; no-op when it is done already."""
        if self.future.done():
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)


class DeadlineExceeded(Exception):
    """The request's deadline passed before its turn: the work was dropped."""


class OutOfDeviceMemory(Exception):
    """A single request did not fit in the device's memory, even alone."""

    def __init__(self, device: str, pixels: int) -> None:
        super().__init__(f"{pixels} pixels do not fit in the memory of {device}")
        self.device, self.pixels = device, pixels

    def __reduce__(self) -> tuple:  # pickled between Ray replicas
        return OutOfDeviceMemory, (self.device, self.pixels)


class WorkerFailed(Exception):
    """The worker holding the request died."""
