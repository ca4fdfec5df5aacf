"""The layering the code relies on, checked on the source so that a shortcut back is caught at once.

- Only the outer shells (API, CLI, demo, the package root) import the facade: services and the
  runtime get what they use through their constructors.
- No service reaches into another's insides: no ``type: ignore[attr-defined]`` and no
  ``getattr(self, "_...")`` in ``engine/service``, and no service class inherits another.
- Domain errors know nothing of HTTP: no status in ``engine/errors.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[1] / "engine"
FACADE_IMPORTERS = {"engine/__init__.py", "engine/cli.py", "engine/cli_audit.py", "engine/demo.py"}


def _imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_only_the_shells_import_the_facade() -> None:
    importers = {str(path.relative_to(ENGINE.parent)) for path in ENGINE.rglob("*.py")
                 if "engine.facade" in _imported_modules(path)}
    outside_the_api = {name for name in importers if not name.startswith("engine/api/")}
    assert outside_the_api <= FACADE_IMPORTERS, sorted(outside_the_api - FACADE_IMPORTERS)


def test_services_share_through_constructors_not_through_self() -> None:
    for path in sorted((ENGINE / "service").glob("*.py")):
        text = path.read_text()
        assert "type: ignore[attr-defined]" not in text, path.name
        assert 'getattr(self, "_' not in text and "getattr(self, '_" not in text, path.name
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Service"):
                assert not node.bases, f"{path.name}: {node.name} inherits {ast.unparse(node.bases[0])}"


def test_the_facade_inherits_nothing() -> None:
    tree = ast.parse((ENGINE / "facade.py").read_text())
    engine_class = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "CampaignEngine")
    assert engine_class.bases == []


def test_domain_errors_carry_no_http_status() -> None:
    from engine import errors
    from engine.api.support import HTTP_STATUS, http_status

    for error in vars(errors).values():
        if isinstance(error, type) and issubclass(error, errors.EngineError):
            assert "status" not in vars(error), error.__name__
    assert http_status(errors.NotFound("campaign", "cmp_1")) == 404
    assert http_status(errors.Conflict("contact_exists", "exists")) == 409
    assert all(isinstance(status, int) and 400 <= status < 600 for status in HTTP_STATUS.values())
