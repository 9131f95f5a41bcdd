"""The multipart forms of the API as FastAPI dependencies, so that /docs describes every field."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, File, Form, Request, UploadFile

from adain.errors import clip
from adain.video.temporal import DEFAULT_LEVEL
from adain.video.writer import DEFAULT_QUALITY

from ..errors import ServiceError

OutputFormat = Literal["png", "jpeg", "webp"]


@dataclass
class StyleFields:
    """The fields POST /v1/stylize and POST /v1/videos share: the styles and how they are applied."""

    styles: list[UploadFile]
    style_ids: list[str]
    weights: list[float] | None
    alpha: float
    preserve_color: Literal["none", "coral", "luminance"]
    masks: list[UploadFile]
    content_size: int | None
    style_size: int | None
    style_scale: float
    grain: float | None

    @property
    def n_styles(self) -> int:
        return len(self.styles) + len(self.style_ids)


#: the fields a form may repeat (one per style); every other field takes one value
REPEATABLE_FIELDS = ("style", "style_id", "weights", "mask")


@dataclass
class StylizeForm(StyleFields):
    """The fields of POST /v1/stylize."""

    content: UploadFile
    format: OutputFormat | None
    quality: int


@dataclass
class VideoForm(StyleFields):
    """The fields of POST /v1/videos."""

    clip: UploadFile
    stability: int
    audio: bool
    quality: int


def parse_weights(values: list[str] | None) -> list[float] | None:
    """Weights given as repeated fields and/or comma-separated lists; None when absent."""
    if not values:
        return None
    try:
        weights = [float(x) for v in values for x in v.split(",") if x.strip()]
    except ValueError:
        raise ServiceError(422, "invalid_request", f"weights must be numbers, got {clip(values)}") from None
    if not all(math.isfinite(w) for w in weights):
        raise ServiceError(422, "invalid_request", f"weights must be finite numbers, got {clip(values)}")
    return weights


def checked_form(*known: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency: 422 for a field not in ``known`` (naming the nearest known one: a misspelt field would
    otherwise be silently ignored), and for the first field the form repeats that is not one of
    :data:`REPEATABLE_FIELDS` (it would otherwise be silently last-wins)."""
    async def check(request: Request) -> None:
        form = await request.form()  # parsed once per request: FastAPI reads the same, cached form
        for name in form.keys():
            if name not in known:
                near = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {near[0]}?" if near else f"the fields are {', '.join(known)}"
                raise ServiceError(422, "invalid_request", f"unknown field {clip(name)!r}: {hint}")
        for name in (n for n in known if n not in REPEATABLE_FIELDS):
            count = len(form.getlist(name))
            if count > 1:
                raise ServiceError(422, "invalid_request", f"{name} was given {count} times; it takes one value")

    return check


def style_fields(
    style: Annotated[list[UploadFile] | None, File(description="A style image; repeat for a blend.")] = None,
    style_id: Annotated[list[str] | None, Form(description="Id of a stored style (POST /v1/styles): this key's own "
                                               "or a public one; repeatable. Stored styles come after the uploaded "
                                               "ones.")] = None,
    weights: Annotated[list[str] | None, Form(description="Blend weights, one per style, as repeated fields or "
                                              "'0.7,0.3'; normalised to sum to 1. Default: equal.")] = None,
    alpha: Annotated[float, Form(description="Stylization strength, 0 (content) to 1 (full style).")] = 1.0,
    preserve_color: Annotated[Literal["none", "coral", "luminance"],
                              Form(description="Keep the content's colours.")] = "none",
    mask: Annotated[list[UploadFile] | None, File(description="Spatial control: one label image (values "
                                                  "0..S-1) or one grey mask per style: the content's (a clip's "
                                                  "frames') size, the output's, or the content's shape at any size. "
                                                  "Excludes weights.")] = None,
    content_size: Annotated[int | None, Form(ge=0, description="Shorter side of the content (a clip's frames) in "
                                             "pixels (0: keep). Default: the server's (512).")] = None,
    style_size: Annotated[int | None, Form(ge=0, description="Shorter side of the styles in pixels (0: keep). "
                                           "Default: the server's (512).")] = None,
    style_scale: Annotated[float, Form(description="Texture scale, 0.25 to 4: the styles are resized by this factor "
                                       "after style_size, so their strokes come out larger (above 1) or finer "
                                       "(below 1). style_size x style_scale is bounded like style_size.")] = 1.0,
    grain: Annotated[float | None, Form(description="Noise added to the content before it is encoded (0 to 0.5, "
                                        "times alpha), from which the decoder paints the style's texture where "
                                        "the photo is flat; 0 turns it off. Default: the server's (its decoder's "
                                        "unless --grain is set).")] = None,
) -> StyleFields:
    """Collect the style fields (FastAPI validates types and ranges; the rest is checked when decoding)."""
    return StyleFields(style or [], [s.strip() for s in style_id or []], parse_weights(weights), alpha,
                       preserve_color, mask or [], content_size, style_size, style_scale, grain)


#: the form fields :func:`style_fields` takes
STYLE_FIELD_NAMES = tuple(inspect.signature(style_fields).parameters)


def _fields(fields: StyleFields) -> dict:
    return {f.name: getattr(fields, f.name) for f in dataclasses.fields(StyleFields)}


def stylize_form(
    _: Annotated[None, Depends(checked_form("content", *STYLE_FIELD_NAMES, "format", "quality"))],
    content: Annotated[UploadFile, File(description="The content image (JPEG, PNG or WebP by default).")],
    fields: Annotated[StyleFields, Depends(style_fields)],
    format: Annotated[OutputFormat | None, Form(description="Output format. Default: from the Accept "
                                                "header, else png.")] = None,
    quality: Annotated[int, Form(ge=1, le=100, description="JPEG/WebP quality.")] = 95,
) -> StylizeForm:
    """Collect the stylize form."""
    return StylizeForm(**_fields(fields), content=content, format=format, quality=quality)


def video_form(
    _: Annotated[None, Depends(checked_form("clip", *STYLE_FIELD_NAMES, "stability", "audio", "quality"))],
    clip: Annotated[UploadFile, File(description="The clip (any format FFmpeg reads).")],
    fields: Annotated[StyleFields, Depends(style_fields)],
    stability: Annotated[int, Form(description="0 per frame .. 3 most stable (docs/video.md).")] = DEFAULT_LEVEL,
    audio: Annotated[bool, Form(description="Copy the clip's audio track.")] = True,
    quality: Annotated[int, Form(ge=1, le=100, description="H.264 quality (x264's CRF is 51 - 0.4 x quality).")]
    = DEFAULT_QUALITY,
) -> VideoForm:
    """Collect the video job form."""
    return VideoForm(**_fields(fields), clip=clip, stability=stability, audio=audio, quality=quality)
