"""Real small file systems for the storage tests: a tmpfs mounted for the test, as root."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """Mounts a tmpfs of ``size`` (e.g. ``"2m"``) at ``path`` for the block; skips the
    test, saying why, where this machine cannot mount one (not root, no CAP_SYS_ADMIN)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the suite as root)")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True, text=True, check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False)


def remount(path: Path, options: str) -> None:
    """Changes a mounted tmpfs's options, e.g. ``"size=8m"`` (space comes back)."""
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True)
