"""The test suite's own house rules, checked so they stay true: one emulator fixture (in
conftest.py), one fake clock (in support.py), and no test module importing another (shared
helpers live in the *_support.py modules)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def modules() -> dict[str, ast.Module]:
    return {p.name: ast.parse(p.read_text(encoding="utf-8")) for p in sorted(TESTS.glob("*.py"))}


def test_no_test_module_imports_another() -> None:
    """A test module imports helpers from support modules, never from another test module."""
    found = []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("test_"):
                found.append(f"{name}: from {node.module} import ...")
            if isinstance(node, ast.Import):
                found += [f"{name}: import {a.name}" for a in node.names if a.name.startswith("test_")]
    assert found == []


def test_one_emulator_fixture_and_one_fake_clock() -> None:
    """`emu`/`emu_thread` are defined only in conftest.py (modules override `emu_settings`), and
    the only clock class is support.FakeClock."""
    fixtures, clocks = [], []
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in ("emu", "emu_thread") \
                    and name != "conftest.py":
                fixtures.append(f"{name}: {node.name}")
            if isinstance(node, ast.ClassDef) and node.name.endswith("Clock") and name != "support.py":
                clocks.append(f"{name}: {node.name}")
    assert fixtures == [] and clocks == []
