"""Chimera uses the libraries it depends on through their public API only: no private
(``_name``) module or name imported from another package (ruff's PLC2701), and no
private attribute of another package's objects (SLF001), so an upgrade that keeps the
public API keeps Chimera working (a ``Histogram``'s ``_buckets``, ``grpc_health``'s
``_async`` module are gone)."""

from __future__ import annotations

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
