"""Checks of the package's structure that anyone can run: no import circle, modules of
a readable size (or a reason at their top), thin tools, one writer of ``model.json``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "fcn_captcha"
MAX_LINES = 500
MAX_TOOL_LINES = 40


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PKG.glob("*.py")) if p.stem != "__init__"}


def _imports(path: Path) -> set[str]:
    """Package modules a module imports, at its top or inside functions alike."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fcn_captcha."):
            out.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "fcn_captcha":
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("fcn_captcha."))
    return out


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {d for d in _imports(p) if d in mods and d != m} for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state and (c := visit(d)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (c := visit(m)):
            return c
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_package():
    assert find_cycle(import_graph()) is None


@pytest.mark.parametrize("name", sorted(_modules()))
def test_module_size_or_a_written_reason(name):
    path = _modules()[name]
    n = len(path.read_text().splitlines())
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert n <= MAX_LINES or "Why this module is long" in doc, f"{path.name}: {n} lines and no reason at its top"


def test_tools_are_thin():
    for p in sorted((ROOT / "tools").glob("*.py")):
        n = len(p.read_text().splitlines())
        assert n < MAX_TOOL_LINES, f"{p.name}: {n} lines"
        assert "argparse" not in p.read_text(), f"{p.name} parses its own arguments; the CLI should"


def test_model_json_has_one_writer():
    writers = []
    for p in sorted(PKG.glob("*.py")) + sorted((ROOT / "tools").glob("*.py")):
        for i, line in enumerate(p.read_text().splitlines(), 1):
            if re.search(r"model\.json", line) and re.search(r"write_text|open\(.*['\"]w|json\.dump\(", line):
                writers.append(f"{p.name}:{i}")
    assert writers == [], writers  # checkpoint writes through _write_card, which names no file literally
    card = (PKG / "checkpoint.py").read_text()
    assert card.count("def _write_card(") == 1 and "os.replace(tmp, model_dir / \"model.json\")" in card
    for p in sorted(PKG.glob("*.py")):
        if p.name != "checkpoint.py":
            assert "_write_card" not in p.read_text(), p.name
