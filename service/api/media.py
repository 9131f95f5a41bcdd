"""Image formats on the way out: content negotiation, their media types, the size of thumbnails."""

from __future__ import annotations

from adain.images import OUTPUT_FORMATS

THUMBNAIL_SIZE = 256
THUMBNAIL_QUALITY = 85
MIME_TO_FORMAT = {mime: fmt for fmt, (_, mime) in OUTPUT_FORMATS.items()}
WILDCARDS = {"image/*": 1, "*/*": 0}  # specificity; exact types rank 2


def _q(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def negotiate(accept: str | None) -> str:
    """The output format an Accept header prefers (highest q, specific types before wildcards); png by default."""
    best, best_rank = "png", (0.0, 0, 0)
    for position, item in enumerate((accept or "").split(",")):
        mime, _, params = item.partition(";")
        mime = mime.strip().lower()
        if mime in MIME_TO_FORMAT:
            fmt, specificity = MIME_TO_FORMAT[mime], 2
        elif mime in WILDCARDS:
            fmt, specificity = "png", WILDCARDS[mime]
        else:
            continue
        rank = (_q(params), specificity, -position)
        if rank[0] > 0 and rank > best_rank:
            best, best_rank = fmt, rank
    return best


def media_type(fmt: str) -> str:
    """MIME type of an output format."""
    return OUTPUT_FORMATS[fmt][1]


def thumbnail_side(hw: tuple[int, int]) -> int:
    """The shorter side of the thumbnail of an image of (H, W) ``hw``: its longer side at most THUMBNAIL_SIZE."""
    short, long = min(hw), max(hw)
    return short if long <= THUMBNAIL_SIZE else max(1, THUMBNAIL_SIZE * short // long)
