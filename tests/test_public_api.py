"""Chimera uses the libraries it depends on through their public API only: no private
(``_name``) module or name imported from another package (ruff's PLC2701), and no
private attribute of another package's objects (SLF001), so an upgrade that keeps the
public API keeps Chimera working (a ``Histogram``'s ``_buckets``, ``grpc_health``'s
``_async`` module are gone)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"


def test_no_private_names_of_other_packages() -> None:
    found = subprocess.run(
        [
            str(RUFF), "check", "--preview", "--no-cache", "--output-format", "concise",
            "--select", "PLC2701,SLF001",
            # The broadcaster's channel and subscription classes are one unit in one
            # module, and reach each other's private parts by design.
            "--per-file-ignores", "chimera/actors/broadcaster.py:SLF001",
            "chimera",
        ],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert found.returncode == 0, found.stdout + found.stderr


# The server side of websockets: the modules that hold its connections.
WEBSOCKETS_SERVER_SIDE = [
    *sorted((ROOT / "chimera" / "gateways").glob("*.py")),
    *sorted((ROOT / "chimera" / "http").glob("*.py")),
    ROOT / "chimera" / "observability" / "listener.py",
]

# Undocumented attributes of websockets' Connection and Protocol objects (the
# gateway once read the first five), each with what replaces it. Frames are
# made by Protocol.send_text(), never serialized here and written past it.
WEBSOCKETS_INTERNALS = {
    "write_limit_high": "the high-water mark is the WRITE_LIMIT given to serve()",
    "write_limit_low": "the high-water mark is the WRITE_LIMIT given to serve()",
    "connection_lost_waiter": "ws.wait_closed(), or WsConnection.on_close",
    "close_sent": "ConnectionClosed.sent (the documented Protocol.close_exc)",
    "close_rcvd": "ConnectionClosed.rcvd (the documented Protocol.close_exc)",
    "close_rcvd_then_sent": "ConnectionClosed.rcvd_then_sent (Protocol.close_exc)",
    "drain": "ws.send() waits for the buffer to drain; Connection.drain() is undocumented",
    "send_data": "Protocol.data_to_send(), written to the transport",
    "send_in_progress": "undocumented",
    "drain_waiters": "undocumented",
    "paused": "undocumented",
    "close_deadline": "undocumented",
    "recv_messages": "undocumented",
    "transport": "WsConnection.asyncio_transport (asyncio's connection_made)",
    "protocol": "WsConnection.sansio (ServerConnection's constructor argument)",
    "serialize": "frames are made by Protocol.send_text()",
    "ws_frame": "frames are made by Protocol.send_text()",
}


def websockets_internals_used(path: Path) -> list[str]:
    """Each use in ``path`` of a name in :data:`WEBSOCKETS_INTERNALS` (an attribute;
    ``ws_frame`` also as a name or definition), or a ``websockets.frames``
    ``Frame``/``Opcode`` import;
    comments and docstrings, which may tell the history, are not code."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        name = None
        if isinstance(node, ast.Attribute):
            name = node.attr
        elif isinstance(node, ast.Name | ast.FunctionDef | ast.AsyncFunctionDef):
            # A local variable named protocol or transport (an argument) is no use.
            name = node.id if isinstance(node, ast.Name) else node.name
            name = name if name == "ws_frame" else None
        elif (
            isinstance(node, ast.ImportFrom) and node.module == "websockets.frames"
            and {"Frame", "Opcode"} & {alias.name for alias in node.names}
        ):
            name = "serialize"
        if name in WEBSOCKETS_INTERNALS:
            where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
            found.append(f"{where}: {name} ({WEBSOCKETS_INTERNALS[name]})")
    return found


def test_the_websocket_server_side_uses_no_websockets_internals() -> None:
    """So the pin can allow the next major: what websockets documents only. The
    one exception, with no documented equivalent, is named where it is
    (``ws_session._close``: one connection's ``close_timeout``)."""
    found = [use for path in WEBSOCKETS_SERVER_SIDE for use in websockets_internals_used(path)]
    assert not found, "\n".join(found)
