"""Every third-party package the code imports is declared in ``pyproject.toml``.

A package that arrives only as another's dependency (pydantic through google-genai,
httpx2 through the SDKs) works until that other package drops it.
"""

from __future__ import annotations

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(package: Path) -> dict[str, str]:
    """Top-level module → a file importing it, for every absolute import under ``package``."""
    found: dict[str, str] = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.partition(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    distributions = packages_distributions()
    undeclared = []
    imports = imported_modules(ROOT / "chimera")
    assert {"grpc", "websockets", "redis", "orjson"} <= imports.keys()  # the walk sees imports
    for module, where in sorted(imports.items()):
        if module in sys.stdlib_module_names or module in ("__future__", "chimera"):
            continue
        owners = {canonicalize_name(d) for d in distributions.get(module, [])}
        assert owners, f"{module} (imported in {where}) is not installed"
        if not owners & declared:
            undeclared.append(f"{module} ({where}; from {', '.join(sorted(owners))})")
    assert not undeclared, "imported but not in [project] dependencies: " + "; ".join(undeclared)
