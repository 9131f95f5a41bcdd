"""The layering of docs/architecture.md, read from the code's own imports: every arrow runs down, no circles."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("adain", "service")

#: What each part may import of this project (its own modules always); anything else is an upward arrow.
ALLOWED = {
    "adain.bundles": {"adain.errors", "adain.files", "adain.net", "adain.options"},
    "adain.optimize": {"adain.errors", "adain.masks", "adain.net", "adain.ops", "adain.options", "adain.stylizer"},
    "service.store": {"adain.errors", "adain.ops"},
    "service.runtime": {"adain", "service.errors", "service.metrics", "service.settings"},
}
#: The model at adain's root never reaches into training or optimisation.
MODEL_MODULES = ("net", "ops", "upconv", "tiling", "precision", "images", "masks", "options", "stylizer", "errors",
                 "files", "devices", "arguments")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}


def _imports(module: str, top_level_only: bool) -> set[str]:
    """The project modules ``module`` imports (at module level only, or anywhere in it)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                name = f"{target}.{alias.name}"
                found.add(name if name in MODULES else target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _within(name: str, prefixes: set[str] | tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_library_never_imports_the_service() -> None:
    upward = {(m, t) for m in MODULES if m.startswith("adain") for t in _imports(m, False) if t.startswith("service")}
    assert upward == set()


@pytest.mark.parametrize("part", sorted(ALLOWED))
def test_each_part_imports_only_what_lies_below_it(part: str) -> None:
    upward = {(m, t) for m in MODULES if _within(m, (part,)) for t in _imports(m, False)
              if not _within(t, (part,)) and not _within(t, ALLOWED[part])}
    assert upward == set()


def test_the_model_does_not_reach_into_training_or_optimisation() -> None:
    model = {f"adain.{name}" for name in MODEL_MODULES}
    upward = {(m, t) for m in model for t in _imports(m, False) if _within(t, ("adain.train", "adain.optimize"))}
    assert upward == set()


def test_no_import_circles() -> None:
    graph = {m: _imports(m, True) & MODULES.keys() for m in MODULES}
    circles, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                circles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


@pytest.mark.parametrize(("command", "blocked", "extra"), [
    ("serve", "fastapi", "service"), ("key", "service", "service"), ("video", "av", "video"),
    ("video", "cv2", "video")])
def test_commands_without_their_extra_say_what_to_install(command: str, blocked: str, extra: str) -> None:
    """A command whose extra (or the whole service package) is missing: one line, exit 2, no traceback."""
    code = f"import sys; sys.modules[{blocked!r}] = None; from adain.cli import main; sys.exit(main([{command!r}]))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"adain {command}: needs pip install 'adain[{extra}]' (no module named '{blocked}" in done.stderr
    assert "Traceback" not in done.stderr
