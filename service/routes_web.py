"""The web page: GET / and its files under /static/ (service/static). The page talks only to the public API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from adain.errors import clip

from .errors import ServiceError

STATIC = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}

router = APIRouter(tags=["web"], include_in_schema=False)


def _file(name: str) -> FileResponse:
    # Only the page's own files, by exact name: no paths, nothing outside service/static.
    files = {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES}
    path = files.get(name)
    if path is None:
        raise ServiceError(404, "not_found", f"there is no file {clip(name)!r}")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers={"Cache-Control": "no-cache"})


@router.get("/")
async def index() -> FileResponse:
    """The web page."""
    return _file("index.html")


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    """A file of the web page (script, style sheet)."""
    return _file(name)
