"""``adain serve``: load the model, then run the service under uvicorn until SIGTERM/SIGINT.

Exit status: 0 after a graceful shutdown, 1 when a worker died (so that a
supervisor restarts the process), 2 for bad configuration.
"""

from __future__ import annotations

import logging
import signal

import uvicorn

from adain.errors import AdainError, exit_status

from .app import create_app
from .engine import Engine
from .header_timeout import http_protocol
from .settings import load_settings


def main(argv: list[str]) -> int:
    """Entry point of ``adain serve``."""
    settings = load_settings(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        engine = Engine.load(settings)
        app = create_app(settings, engine)
    except (AdainError, KeyboardInterrupt) as exc:
        return exit_status("adain serve", exc)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                            timeout_graceful_shutdown=settings.shutdown_timeout, server_header=False,
                            timeout_keep_alive=settings.keep_alive_timeout, http=http_protocol(settings.header_timeout))
    server = uvicorn.Server(config)
    engine.on_fatal = lambda: setattr(server, "should_exit", True)
    # uvicorn re-raises the signal that stopped it once shutdown is complete; by then it has been handled.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    server.run()
    if engine.failed:
        logging.getLogger("adain.service").critical("exiting with status 1: a worker failed")
        return 1
    return 0
