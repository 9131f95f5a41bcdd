"""``adain serve``: load the model, then run the service under uvicorn until SIGTERM/SIGINT.

With ``--admin-port`` a second uvicorn server, in the same process and event loop, serves the operations
endpoints (service/admin.py); it stops when the public one does.

SIGHUP (a closed terminal, a supervisor's reload) stops it as SIGTERM does: in-flight work is finished first.

Exit status: 0 after a graceful shutdown, 1 when a worker died (so that a
supervisor restarts the process), 2 for bad configuration (a port in use included: the ports are bound before
the model loads).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from types import FrameType

import uvicorn
from fastapi import FastAPI

from adain.errors import AdainError, InputError, exit_status

from .admin import create_admin_app
from .api.header_timeout import http_protocol
from .app import create_app
from .runtime.engine import Engine
from .runtime.memory import memory_available, memory_warning, worst_case
from .settings import Settings, load_settings

log = logging.getLogger("adain.service")


class PublicServer(uvicorn.Server):
    """The public port's server: it also takes SIGHUP, and stops for it as for SIGTERM (uvicorn alone handles
    SIGINT and SIGTERM, and SIGHUP killed the process at once, cutting off the requests in flight)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = signal.signal(signal.SIGHUP, self._hang_up)
        try:
            with super().capture_signals():
                yield
        finally:
            signal.signal(signal.SIGHUP, previous)

    def _hang_up(self, sig: int, frame: FrameType | None) -> None:
        log.warning("SIGHUP: shutting down as for SIGTERM, after the requests in flight")
        self.handle_exit(signal.SIGTERM, frame)


class AdminServer(uvicorn.Server):
    """The admin port's server: the public server handles the signals, and stops this one when it is done."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: FastAPI, port: int, settings: Settings, lifespan: str) -> uvicorn.Config:
    return uvicorn.Config(app, host=settings.host, port=port, log_level=settings.log_level, lifespan=lifespan,
                          timeout_graceful_shutdown=settings.shutdown_timeout, server_header=False,
                          limit_concurrency=settings.max_connections,
                          proxy_headers=bool(settings.forwarded_allow_ips),
                          forwarded_allow_ips=list(settings.forwarded_allow_ips) or None,
                          timeout_keep_alive=settings.keep_alive_timeout, http=http_protocol(settings.header_timeout))


def _bind(host: str, port: int, flag: str) -> socket.socket:
    """A listening socket on ``host``:``port`` (InputError naming ``flag`` when that port is taken or not ours)."""
    try:
        return socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port} ({flag}): {exc.strerror or exc}") from None


def listen(settings: Settings) -> list[socket.socket]:
    """The public port's socket, and the admin port's when there is one, bound before anything else is done."""
    if settings.admin_port is not None and settings.admin_port == settings.port != 0:
        raise InputError(f"--admin-port {settings.admin_port} is --port too: give the operations endpoints a port of "
                         "their own")
    sockets = [_bind(settings.host, settings.port, "--port")]
    try:
        if settings.admin_port is not None:
            sockets.append(_bind(settings.host, settings.admin_port, "--admin-port"))
    except InputError:
        sockets[0].close()
        raise
    return sockets


async def _serve(public: uvicorn.Server, admin: uvicorn.Server | None, sockets: list[socket.socket]) -> None:
    """Run the public server, and the admin one beside it until the public one stops."""
    if admin is None:
        await public.serve(sockets[:1])
        return
    beside = asyncio.create_task(admin.serve(sockets[1:]))
    try:
        await public.serve(sockets[:1])
    finally:
        admin.should_exit = True
        await beside


def main(argv: list[str]) -> int:
    """Entry point of ``adain serve``."""
    settings = load_settings(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sockets: list[socket.socket] = []
    try:
        sockets = listen(settings)
        engine = Engine.load(settings)
        app = create_app(settings, engine)
    except (AdainError, KeyboardInterrupt) as exc:
        for sock in sockets:
            sock.close()
        return exit_status("adain serve", exc)
    parts = worst_case(settings, len(engine.workers))
    log.info(
        "memory above idle at most %.0f MiB: %s (docs/deploy.md, Memory)", sum(parts.values()) / 2**20,
        ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in parts.items()))
    if warning := memory_warning(parts, memory_available()):
        log.warning(warning)
    host, port = sockets[0].getsockname()[:2]
    log.info("listening on http://%s:%d (the web page at /, the API reference at /docs)",
             f"[{host}]" if ":" in host else host, port)
    config = _config(app, settings.port, settings, "auto")
    server = PublicServer(config)
    admin = None
    if settings.admin_port is not None:
        admin = AdminServer(_config(create_admin_app(settings, app, engine), settings.admin_port, settings, "off"))
    engine.on_fatal = lambda: setattr(server, "should_exit", True)
    # uvicorn re-raises the signal that stopped it once shutdown is complete; by then it has been handled, so it
    # meets SIG_IGN. The caller's handlers come back afterwards (an in-process caller keeps its Ctrl-C).
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
            runner.run(_serve(server, admin, sockets))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if engine.failed:
        log.critical("exiting with status 1: a worker failed")
        return 1
    return 0
