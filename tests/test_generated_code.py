"""The committed chimera/v1 code (and descriptors.binpb, the protos with their comments
that reflection serves) must be exactly what scripts/gen_protos produces now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run(
        [str(ROOT / "scripts" / "gen_protos"), str(tmp_path)],
        check=True,
        env={"VENV_BIN": str(Path(sys.executable).parent), "PATH": "/usr/bin:/bin"},
    )
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "chimera" / "v1").iterdir())
    committed = sorted(
        p.relative_to(ROOT)
        for pattern in ("*_pb2*", "*.binpb")
        for p in (ROOT / "chimera" / "v1").glob(pattern)
    )
    assert generated == committed, "run scripts/gen_protos and commit chimera/v1"
    for rel in generated:
        assert (tmp_path / rel).read_bytes() == (ROOT / rel).read_bytes(), (
            f"{rel} is stale: run scripts/gen_protos and commit the result"
        )


def test_descriptor_set_keeps_the_comments() -> None:
    """descriptors.binpb has the source code info the _pb2 modules leave out."""
    data = (ROOT / "chimera" / "v1" / "descriptors.binpb").read_bytes()
    (jobs,) = descriptor_pb2.FileDescriptorSet.FromString(data).file
    assert jobs.name == "chimera/v1/jobs.proto"
    comments = [loc.leading_comments for loc in jobs.source_code_info.location]
    assert " Creates a job and starts its teams at once.\n" in comments
