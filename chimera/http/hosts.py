"""The ``Host`` allow-list: the first check on every HTTP and WebSocket request.

DNS rebinding: a page on ``http://evil.com:8888`` rebinds ``evil.com`` to
127.0.0.1; the browser then sends ``Host: evil.com:8888`` and
``Origin: http://evil.com:8888`` to this server, which looks same-origin. The
``Host`` header is the one thing the attacker cannot make ours, so it is
checked against names this server knows it is reached by, before anything else.

Default allow-list: the ``--host`` the server is bound to, plus ``localhost``,
``127.0.0.1`` and ``::1`` when that is a loopback address; bound to a wildcard
address (``0.0.0.0``, ``::``), any IP address literal (rebinding needs a DNS
name) plus the loopback names. ``--allowed-host NAME`` adds names (``*`` = any).
The port in ``Host`` is not compared: rebinding reuses the same port anyway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str | None:
    """The lower-case name in a ``Host`` header (``[::1]:8888`` → ``::1``), or None
    if it is not one."""
    value = header.strip().lower()
    if not value:
        return None
    if value.startswith("["):
        name, bracket, rest = value[1:].partition("]")
        if not bracket or (rest and not (rest[0] == ":" and rest[1:].isdigit())):
            return None
        return name if _is_ip(name) else None
    name, colon, port = value.partition(":")
    if colon and not (port.isascii() and port.isdigit()):
        return None
    return name.rstrip(".") or None


class HostAllowList:
    def __init__(self, bound_host: str, allowed: Iterable[str] = ()) -> None:
        names = {a.strip().lower().strip("[]").rstrip(".") for a in allowed if a.strip()}
        self.any = "*" in names
        bound = bound_host.strip().lower().strip("[]")
        self._wildcard = bound in WILDCARD_HOSTS
        if bound and not self._wildcard:
            names.add(bound)
        if self._wildcard or _is_loopback(bound):
            names.update(LOOPBACK_NAMES)
        self._names = frozenset(names)

    def allows(self, headers: list[str]) -> bool:
        """True if the request's ``Host`` header values (exactly one) name this server."""
        if self.any:
            return True
        if len(headers) != 1:
            return False
        name = host_name(headers[0])
        if name is None:
            return False
        return name in self._names or (self._wildcard and _is_ip(name))

    def refusal(self, headers: list[str]) -> str:
        """The body of the 421 answer: what was refused and how to allow it."""
        shown = headers[0][:100] if len(headers) == 1 else f"{len(headers)} Host headers"
        return (
            f"Host {shown!r} is not served here (DNS rebinding guard): this server answers "
            "to the address it is bound to and to the names given with --allowed-host\n"
        )
