"""The WebSocket server's connection: websockets' ``ServerConnection``, made through
``serve()``'s ``create_connection`` hook, keeping the two objects it is handed so the
fast path (:mod:`chimera.gateways.fast_path`), the close metrics and the gateway's
shutdown use their documented APIs, not websockets' undocumented attributes.

- ``sansio``: the Sans-I/O :class:`~websockets.server.ServerProtocol` the connection
  runs on, the documented first argument of ``ServerConnection(protocol, server, ...)``.
  Its ``state``, ``send_text()``, ``data_to_send()`` and ``close_exc`` are documented
  (websockets' Sans-I/O reference); ``close_exc`` is a
  :exc:`~websockets.exceptions.ConnectionClosed` whose ``sent`` and ``rcvd_then_sent``
  are documented too.
- ``asyncio_transport``: the :class:`asyncio.Transport`, handed over by asyncio in
  ``connection_made()``, the asyncio ``Protocol`` callback (the connection is the
  asyncio protocol of its socket); ``write()``, ``get_write_buffer_size()`` and
  ``abort()`` are asyncio's public transport API.

``create_connection`` is documented for this ("set it to a wrapper or a subclass to
customize connection handling"); each override calls websockets' own first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from websockets.asyncio.server import Server
from websockets.exceptions import ConnectionClosed
from websockets.server import ServerProtocol

from chimera.http.edge import EdgeConnection

# The transport's high-water mark, bytes: given to serve() (websockets' default), and
# the bound the fast path writes under and a session fills its batches to.
WRITE_LIMIT = 2**15


class WsConnection(EdgeConnection):
    """A ``ServerConnection`` that keeps its Sans-I/O protocol and its transport
    (module docstring; ``sansio`` and ``asyncio_transport``, kept by
    :class:`~chimera.http.edge.EdgeConnection`), and tells ``on_close`` how it ended once its TCP
    connection is gone. It is an :class:`~chimera.http.edge.EdgeConnection`, so the
    requests websockets would close on without a word get an HTTP answer first."""

    __slots__ = ("on_close",)  # as EdgeConnection's: the instance dict keeps shared keys

    def __init__(self, protocol: ServerProtocol, server: Server, **kwargs: Any) -> None:
        super().__init__(protocol, server, **kwargs)
        # Called once the connection is closed with the documented ConnectionClosed
        # (who sent which close frame, in which order); None: nobody is told.
        self.on_close: Callable[[ConnectionClosed], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)  # the state is CLOSED from here on
        if self.on_close is not None:
            self.on_close(self.sansio.close_exc)
