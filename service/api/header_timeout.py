"""A limit on the time a client may take to send a request's line and headers (``--header-timeout``).

uvicorn has none: a client that sends a byte of its headers now and then (slowloris) holds its connection for as
long as it likes, and its keep-alive timeout only closes connections that send nothing between requests. This
is uvicorn's httptools protocol with a timer that runs from the moment a connection opens, and from the first
byte of each later request on it, until that request's headers are in. When it fires, a request that has begun
gets a 408 and the connection is closed (one that has sent nothing is just closed).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_MESSAGE = b"the request headers did not arrive in time"
RESPONSE_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_MESSAGE), _MESSAGE))


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol (httptools), closing connections whose headers take over ``seconds``."""

    seconds = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._timer: asyncio.TimerHandle | None = None
        self._begun = False
        super().connection_made(transport)
        self._arm()

    def _arm(self) -> None:
        if self._timer is None:  # never extended: the time runs from the connection or the request's first byte
            self._timer = self.loop.call_later(self.seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._begun = True
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._begun = False
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._begun:
            self.transport.write(RESPONSE_408)
        self.transport.close()


def http_protocol(seconds: float) -> type[asyncio.Protocol] | str:
    """What to give ``uvicorn.Config(http=...)``: the protocol with a header timeout of ``seconds`` (0: uvicorn's
    own, without one)."""
    if not seconds:
        return "auto"
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"seconds": seconds})
