"""Service settings: one table of options, read from command-line flags and ``ADAIN_*`` environment variables.

Each option ``some_name`` has the flag ``--some-name`` and the variable
``ADAIN_SOME_NAME``; a flag beats the variable, which beats the default.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adain.arguments import count_arg
from adain.errors import InputError
from adain.options import DEFAULT_MAX_ASPECT, FORMAT_ALIASES, TILE_PIXELS, TILE_SIZE, check_grain

if TYPE_CHECKING:
    from adain.images import SizeLimits

ENV_PREFIX = "ADAIN_"


@dataclass(frozen=True)
class Settings:
    """Everything that configures one service process."""

    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None
    encoder: Path | None = None
    decoder: Path | None = None
    arch: str | None = None
    device: str = "auto"
    workers: int = 1
    precision: str = "auto"
    batch_size: int = 8
    batch_window_ms: float = 5.0
    queue_size: int = 64
    request_timeout: float = 60.0
    max_upload_bytes: int = 50_000_000
    max_pixels: int = 25_000_000
    max_aspect: float = DEFAULT_MAX_ASPECT
    max_size: int = 2048
    max_styles: int = 8
    formats: tuple[str, ...] = ("jpeg", "png", "webp")
    content_size: int = 512
    style_size: int = 512
    grain: float | None = None  # None: the decoder file's
    style_cache: int = 1024
    tile_pixels: int = TILE_PIXELS
    tile_size: int = TILE_SIZE
    large_pixels: int = 2**20
    decode_threads: int = min(4, os.cpu_count() or 1)
    db: str = ""  # empty: the default store (see service.store.open_store)
    shutdown_timeout: float = 30.0
    log_level: str = "info"
    api_keys: Path | None = None
    cors_origins: tuple[str, ...] = ()
    rate_limit: float = 0.0
    megapixels_per_minute: float = 0.0
    max_stored_styles: int = 0
    max_stored_bytes: int = 0
    docs: bool = True
    metrics: bool = True
    keep_alive_timeout: float = 5.0
    body_timeout: float = 60.0
    header_timeout: float = 10.0
    admin_port: int | None = None
    max_work_bytes: int = 2**31
    max_connections: int = 128
    allowed_hosts: tuple[str, ...] = ()
    forwarded_allow_ips: tuple[str, ...] = ()
    video_dir: str = ""  # empty: videos/ beside a SQLite style store, else in the user data folder
    max_video_bytes: int = 50_000_000
    max_video_seconds: float = 60.0
    max_video_pixels: int = 1920 * 1080
    max_video_jobs: int = 2
    video_ttl: float = 3600.0

    @property
    def limits(self) -> SizeLimits:
        """What an image may become once resized (content, styles and masks)."""
        from adain.images import SizeLimits

        return SizeLimits(self.max_pixels, self.max_aspect)

    @property
    def pil_formats(self) -> tuple[str, ...]:
        """The accepted input formats as PIL names."""
        return tuple(f.upper() for f in self.formats)


def _tile_size(text: str) -> int:
    value = count_arg(8)(text)
    if value % 8:
        raise ValueError(f"must be a multiple of 8, got {value}")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"must be a finite number >= 0, got {text!r}")
    return value


def _aspect(text: str) -> float:
    value = _float(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {text!r}")
    return value


def _grain(text: str) -> float:
    try:
        return check_grain(_float(text))
    except InputError as exc:
        raise ValueError(str(exc)) from None


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def _formats(text: str) -> tuple[str, ...]:
    from adain.images import INPUT_FORMATS

    known = {f.lower() for f in INPUT_FORMATS}
    names = tuple(dict.fromkeys(FORMAT_ALIASES.get(n, n) for n in
                                (p.strip().lower() for p in text.split(",")) if n))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"formats must be a comma-separated subset of {', '.join(sorted(known))}, got {text!r}")
    return names


def _hosts(text: str) -> tuple[str, ...]:
    from .api.security import split_host

    hosts = tuple(h.strip().lower() for h in text.split(",") if h.strip())
    bad = [h for h in hosts if h != "*" and split_host(h) is None]
    if bad or not hosts:
        raise ValueError(f"hosts are name or name:port (or *), comma-separated; got {text!r}")
    return hosts


def _networks(text: str) -> tuple[str, ...]:
    import ipaddress

    entries = tuple(e.strip() for e in text.split(",") if e.strip())
    for entry in entries:
        if entry != "*":
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"expected IP addresses or networks (or *), comma-separated; got {entry!r}") from None
    return entries


def _bool(text: str) -> bool:
    value = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
             "off": False}.get(text.strip().lower())
    if value is None:
        raise ValueError(f"expected true or false, got {text!r}")
    return value


def _origins(text: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    bad = [o for o in origins if o != "*" and not re.fullmatch(r"https?://[^/\s]+", o)]
    if bad:
        raise ValueError(f"origins are scheme://host[:port] (or *), comma-separated; got {', '.join(bad)}")
    return origins


@dataclass(frozen=True)
class Option:
    """One setting as the command line and the environment see it."""

    name: str
    parse: Callable[[str], Any]
    help: str
    aliases: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "address to listen on"),
    Option("port", count_arg(0, 65535), "TCP port (0: any free port)"),
    Option("model", str, "weights bundle from the manifest (default: vgg16-hed)"),
    Option("encoder", Path, "encoder weight file (.pth or .safetensors); overrides the bundle's"),
    Option("decoder", Path, "decoder weight file (.pth or .safetensors); overrides the bundle's"),
    Option("arch", _choice("vgg19", "vgg16"), "architecture of --encoder/--decoder (default: read from the file)"),
    Option("device", str, "auto | cpu | cuda | cuda:N, or a comma-separated list (one worker each); "
           "auto = every visible GPU (CUDA_VISIBLE_DEVICES), else the CPU", aliases=("--devices",)),
    Option("workers", count_arg(1), "workers per device (each owns a copy of the model)"),
    Option("precision", _choice("auto", "fp32", "bf16", "fp16"), "inference precision (autocast); auto: bf16 on "
           "CUDA GPUs and on CPUs with AVX-512 BF16 or AMX, else fp32"),
    Option("batch_size", count_arg(1), "most images one worker runs as one batch"),
    Option("batch_window_ms", _float, "how long a worker waits for more requests to fill a batch"),
    Option("queue_size", count_arg(1), "requests waiting per worker lane before new ones get 503"),
    Option("request_timeout", _float, "seconds a request may take before it gets 504 (its work is dropped, at the "
           "next safe point if it started); requests the queue could not finish in time get 503 at once"),
    Option("max_upload_bytes", count_arg(1), "largest request body (413)"),
    Option("max_pixels", count_arg(1), "most pixels per image: as uploaded (read from the header before decoding) and "
           "as resized to content_size / style_size (checked before resizing) (413)"),
    Option("max_aspect", _aspect, "most the longer side of a resized image may exceed its shorter side, as a factor "
           "(16: at most 16:1) (422)"),
    Option("max_size", count_arg(1), "largest content_size / style_size (and style_size x style_scale) a request may "
           "ask for (422)"),
    Option("max_styles", count_arg(1), "most styles per request (422)"),
    Option("formats", _formats, "accepted input formats, recognised by content (415)"),
    Option("content_size", count_arg(0), "default shorter side of the content (0: keep)"),
    Option("style_size", count_arg(0), "default shorter side of the styles (0: keep); stored styles are encoded at it"),
    Option("grain", _grain, "noise added to every content before it is encoded, times its alpha (0 to 0.5): the "
           "decoder paints the style's texture from it where the photo is flat (default: the decoder file's; "
           "docs/training.md, Grain)"),
    Option("style_cache", count_arg(1), "style statistics kept per worker (LRU, about 4 KiB each)"),
    Option("tile_pixels", count_arg(0), "images (content or style, as prepared) with more pixels than this run through "
           "the networks in overlapping tiles, bounding memory (0: never tile)"),
    Option("tile_size", _tile_size, "tile side in pixels, a multiple of 8 (each tile also reads a halo)"),
    Option("large_pixels", count_arg(0), "requests with more pixels than this (content and styles to encode, as "
           "prepared) run in a second lane of each worker, one at a time, so that they never hold up small ones "
           "(0: one lane)"),
    Option("decode_threads", count_arg(1), "threads decoding, validating and encoding images"),
    Option("db", str, "style store: sqlite:///PATH, a file path, or postgresql://USER:PASSWORD@HOST:PORT/DB "
           "(default: a SQLite file in the user data folder)"),
    Option("shutdown_timeout", _float, "seconds to finish queued work after SIGTERM"),
    Option("log_level", _choice("critical", "error", "warning", "info", "debug"), "log level"),
    Option("api_keys", Path, "file of API keys (lines 'NAME ROLE SHA256', made by `adain key`); every /v1 request "
           "then needs 'Authorization: Bearer KEY' (default: no keys, anyone may do anything)"),
    Option("cors_origins", _origins, "origins (https://host[:port], comma-separated) whose pages may call the API "
           "(default: none; other origins' POST/PATCH/DELETE get 403)"),
    Option("rate_limit", _float, "requests per minute per key (per client address without keys; 0: no limit)"),
    Option("megapixels_per_minute", _float, "megapixels of images per minute per key or address (0: no limit)"),
    Option("max_stored_styles", count_arg(0), "styles one key (or address) may store (0: no limit)"),
    Option("max_stored_bytes", count_arg(0), "bytes of style images one key (or address) may store (0: no limit)"),
    Option("docs", _bool, "serve /docs and /openapi.json"),
    Option("metrics", _bool, "serve /metrics"),
    Option("keep_alive_timeout", _float, "seconds an idle keep-alive connection stays open"),
    Option("body_timeout", _float, "seconds a client may take to send a request body (408; 0: no limit)"),
    Option("header_timeout", _float, "seconds a client may take to send a request's line and headers, from the "
           "connection or the request's first byte (408, the connection closed; 0: no limit)"),
    Option("admin_port", count_arg(0, 65535), "serve /metrics, /docs and /openapi.json on this port (on --host) "
           "instead of the public one (default: on the public one)"),
    Option("max_work_bytes", count_arg(1), "bytes the images of admitted requests may take at once (decoding, queued "
           "or running), reserved from their headers before anything is decoded: more gets 503, a request that alone "
           "needs more gets 413"),
    Option("max_connections", count_arg(1), "most connections at once (uvicorn's limit_concurrency; more get a "
           "plain-text 503), which bounds the request bodies held in memory"),
    Option("allowed_hosts", _hosts, "Host header values the server answers to besides its own (--host, localhost, "
           "127.0.0.1, [::1] on its port): name (any port) or name:port, comma-separated, or * for any; other hosts "
           "get 400 (DNS rebinding)"),
    Option("forwarded_allow_ips", _networks, "addresses (or networks) of proxies whose X-Forwarded-For and "
           "X-Forwarded-Proto are believed, comma-separated, or *; default: none, every client is known by the address "
           "it connects from"),
    Option("video_dir", str, "folder of the video jobs (their clips, results and jobs.db, which lets a restarted "
           "server resume them); default: videos/ beside a SQLite style store, else in the user data folder"),
    Option("max_video_bytes", count_arg(1), "largest clip for POST /v1/videos (413; every body is also capped by "
           "--max-upload-bytes)"),
    Option("max_video_seconds", _float, "longest clip, from its header (413)"),
    Option("max_video_pixels", count_arg(1), "most pixels of a clip's frames as stored, from its header (413)"),
    Option("max_video_jobs", count_arg(1), "video jobs one key (or address) may have queued or running at once (429)"),
    Option("video_ttl", _float, "seconds a finished video job (and its result) is kept before it is deleted"),
)


def parser() -> argparse.ArgumentParser:
    """The ``adain serve`` argument parser (every flag defaults to None: unset)."""
    p = argparse.ArgumentParser(prog="adain serve", description="Run the AdaIN HTTP service.",
                                epilog="Every flag can also be set by its ADAIN_* environment variable "
                                       "(e.g. --batch-size -> ADAIN_BATCH_SIZE); see docs/service.md.")
    for opt in OPTIONS:
        default = getattr(Settings, opt.name)
        shown = f"; default: {','.join(default) if isinstance(default, tuple) else default}" if default else ""
        p.add_argument(opt.flag, *opt.aliases, dest=opt.name, metavar=opt.name.split("_")[-1].upper(),
                       help=f"{opt.help} [{opt.env}{shown}]")
    return p


def load_settings(argv: Sequence[str] = (), environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags, then ``ADAIN_*`` variables, then defaults; bad values exit with a usage error."""
    environ = os.environ if environ is None else environ
    p = parser()
    args = p.parse_args(list(argv))
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw, where = getattr(args, opt.name), opt.flag
        if raw is None and environ.get(opt.env, "") != "":
            raw, where = environ[opt.env], opt.env
        if raw is None:
            continue
        try:
            values[opt.name] = opt.parse(raw)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            p.error(f"{where}: {exc}")
    return Settings(**values)
