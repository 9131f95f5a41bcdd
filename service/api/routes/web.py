"""The web page: GET /, its icon at /favicon.ico and its files under /static/ (service/static).

The page talks only to the public API."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from adain.errors import clip

from ...errors import ServiceError

STATIC = Path(__file__).resolve().parents[2] / "static"  # service/static
MEDIA_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
               ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml",
               ".ico": "image/x-icon"}

router = APIRouter(tags=["web"], include_in_schema=False)
# The page loads only its own files, shows uploads and results (images, videos) as blob: URLs, and is never framed.
CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")


def _file(name: str) -> FileResponse:
    # Only the page's own files, by exact name: no paths, nothing outside service/static.
    files = {p.name: p for p in STATIC.iterdir() if p.is_file() and p.suffix in MEDIA_TYPES}
    path = files.get(name)
    if path is None:
        raise ServiceError(404, "not_found", f"there is no file {clip(name)!r}")
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": CSP}
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=headers)


@router.get("/")
async def index() -> FileResponse:
    """The web page."""
    return _file("index.html")


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    """The page's icon (browsers ask for it at this address)."""
    return _file("favicon.ico")


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    """A file of the web page (script, style sheet)."""
    return _file(name)
