"""Refreshes the Command Center's vendored browser libraries from the npm registry.

``chimera/web/vendor/vendored.json`` pins each library: its npm package, the exact
version, the registry's integrity hash of that version's tarball, its licence, and
which of the tarball's files are copied where (with their sha256, which
``tests/test_vendored.py`` checks). This script runs ``npm pack PACKAGE@VERSION`` (the
ordinary npm client: it verifies the download against the registry's integrity), refuses a
tarball whose integrity is not the pinned one, and copies the listed files under
``chimera/web/vendor/NAME/``. To move to a new version: change ``version``, run with
``--repin`` (which takes the registry's integrity for it), review the diff, commit.

Usage: .venv/bin/python scripts/vendor_web.py [--repin]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENDOR = ROOT / "chimera" / "web" / "vendor"
MANIFEST = VENDOR / "vendored.json"


def pack(package: str, version: str, into: Path) -> tuple[Path, str]:
    """The tarball of ``package@version`` and its integrity, as ``npm pack`` reports them."""
    done = subprocess.run(
        ["npm", "pack", "--json", "--silent", f"{package}@{version}"],
        cwd=into, capture_output=True, text=True, check=True,
    )
    (info,) = json.loads(done.stdout)
    return into / info["filename"], str(info["integrity"])


def refresh(name: str, entry: dict[str, Any], *, repin: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tarball, integrity = pack(entry["package"], entry["version"], Path(tmp))
        if repin:
            entry["integrity"] = integrity
        elif integrity != entry["integrity"]:
            sys.exit(
                f"{entry['package']}@{entry['version']}: the registry's integrity {integrity} "
                f"is not the pinned {entry['integrity']} (run with --repin after a version change)"
            )
        target = VENDOR / name
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as archive:
            for source, file in entry["files"].items():
                member = archive.extractfile(f"package/{source}")
                if member is None:
                    sys.exit(f"{entry['package']}: {source} is not a file in the tarball")
                body = member.read()
                (target / file["path"]).write_bytes(body)
                file["sha256"] = hashlib.sha256(body).hexdigest()
    print(f"{name}: {entry['package']}@{entry['version']} ({len(entry['files'])} files)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repin", action="store_true",
                        help="take the registry's integrity for the pinned versions")
    args = parser.parse_args()
    manifest: dict[str, Any] = json.loads(MANIFEST.read_text())
    for name, entry in manifest.items():
        refresh(name, entry, repin=args.repin)
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
