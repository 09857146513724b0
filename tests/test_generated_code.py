"""The committed chimera/v1 code must be exactly what scripts/gen_protos produces now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "gen_protos"), str(tmp_path)],
        check=True,
        env={"VENV_BIN": str(Path(sys.executable).parent), "PATH": "/usr/bin:/bin"},
    )
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "chimera" / "v1").iterdir())
    committed = sorted(
        p.relative_to(ROOT) for p in (ROOT / "chimera" / "v1").glob("*_pb2*")
    )
    assert generated == committed, "run scripts/gen_protos and commit chimera/v1"
    for rel in generated:
        assert (tmp_path / rel).read_text() == (ROOT / rel).read_text(), (
            f"{rel} is stale: run scripts/gen_protos and commit the result"
        )
