"""The import direction is a rule: each layer imports only the layers below it (AST, function-level imports too).

core -> io -> models -> training -> pipelines -> eval | enhance -> apps -> cli. ``data_modules`` and
``callbacks`` sit beside the library and import it, never the other way round (only the CLI reaches
``data_modules``, for ``text2earth data ...``); nothing imports ``scripts``.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["core", "io", "models", "training", "pipelines", "eval|enhance", "apps", "cli"]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names.split("|")}


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return [m for m in out if m.split(".")[0] in {"text2earth", "data_modules", "callbacks", "scripts"}]


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "text2earth" and len(parts) > 1 and parts[1] in RANK else None


def violations() -> list[str]:
    found = []
    for top in ("text2earth", "data_modules", "callbacks"):
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            me = ".".join(rel.with_suffix("").parts)
            mine = _layer(me)
            for target in _imports(path):
                head, theirs = target.split(".")[0], _layer(target)
                if head == "scripts":
                    found.append(f"{rel} imports {target} (scripts sit on top of everything)")
                elif top == "text2earth" and head in {"data_modules", "callbacks"} and mine != "cli":
                    found.append(f"{rel} imports {target} (the library never imports {head})")
                elif top == "text2earth" and head == "callbacks":
                    found.append(f"{rel} imports {target}")
                elif top == "callbacks" and head == "data_modules":
                    found.append(f"{rel} imports {target} (callbacks import text2earth only)")
                elif top in {"data_modules", "callbacks"} and theirs == "cli":
                    found.append(f"{rel} imports {target} (the CLI is the top layer)")
                elif (
                    mine is not None
                    and theirs is not None
                    and (RANK[theirs] > RANK[mine] or (RANK[theirs] == RANK[mine] and theirs != mine))
                ):
                    found.append(f"{rel} ({mine}) imports {target} ({theirs})")
    return found


def test_imports_point_down_only():
    assert violations() == []


def test_the_rule_catches_an_upward_import(tmp_path, monkeypatch):
    # The checker itself can fail: an upward import in a copy of a core module is reported.
    fake = ROOT / "text2earth" / "core" / "_layer_probe.py"
    fake.write_text("from text2earth.apps.generate import generate_to_folder\n")
    try:
        assert any("_layer_probe" in v for v in violations())
    finally:
        fake.unlink()


def test_no_top_level_module_outside_a_layer():
    loose = [p.name for p in (ROOT / "text2earth").glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules outside a layer package: {loose}"
