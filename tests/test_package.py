"""The Command Center's files ship in the package: a wheel built from this tree holds every
file of the fixed set the server serves (setuptools package-data)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from chimera.gateways.pages import PAGE_FILES, PAGES, STATIC, WebFiles

ROOT = Path(__file__).resolve().parent.parent
SERVED = (*PAGE_FILES, *STATIC)


def test_the_wheel_ships_every_file_the_server_serves(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "chimera", source / "chimera",
                    ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
         "--no-build-isolation", "--no-index", "-q", "-w", str(tmp_path / "dist")],
        capture_output=True, text=True, timeout=120,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("chimera-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in SERVED:
        assert f"chimera/web/{name}" in names, name
    # And the running package finds them where the server looks.
    files = WebFiles()
    assert all(files.read(name) for name in SERVED)
    assert all(files.page(name) for name in PAGES)
