"""Which event loop runs the process: uvloop where it is installed, else asyncio's.

uvloop runs the same asyncio code (grpc.aio, websockets, the actors) with its
loop machinery (scheduling, timers, sockets) in C: scripts/bench.py measured
17-23% less server CPU per delivered event with it (docs/benchmarks.md).
``asyncio`` is the plain loop, the one the in-process tests run on; ``auto``
is uvloop when it imports, else that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from chimera.errors import ConfigError

T = TypeVar("T")

LOOPS: Final = ("auto", "uvloop", "asyncio")
LOOP_ENV: Final = "CHIMERA_LOOP"  # the default of --loop


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """Runs ``main`` to completion on a new event loop of kind ``loop`` (see LOOPS),
    as :func:`asyncio.run` does; :class:`ConfigError` for ``uvloop`` without it."""
    if loop not in LOOPS:
        main.close()
        raise ConfigError(f"unknown event loop {loop!r}: one of {', '.join(LOOPS)}")
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                main.close()
                raise ConfigError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def running_loop() -> str:
    """``uvloop`` or ``asyncio``: the kind of loop running now."""
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") \
        else "asyncio"
