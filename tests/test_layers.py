"""The package layers: every import of a pipeline module goes down (or sideways within its
package), as each package's docstring says ("May import: ..."), and the README's module map is
the packages' own docstrings, so neither can drift. Also: the commands that only read (`--version`,
`validate`, `status`) import no HTTP library."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from support import REPO, cli_env

PACKAGE = REPO / "pipeline"
MAY_IMPORT = re.compile(r"^May import: (?P<names>.+?)\.\s*$", re.M)
README_START, README_END = "<!-- packages:start -->", "<!-- packages:end -->"


def packages() -> dict[str, str]:
    """Package name -> its docstring."""
    found = {}
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        if init.parent.name == "data":  # the demo's samples and defaults: files, no code
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
        found[init.parent.name] = doc or ""
    return found


def allowed(docs: Mapping[str, str]) -> dict[str, set[str]]:
    """Package -> the packages its docstring lets it import."""
    rules = {}
    for name, doc in docs.items():
        match = MAY_IMPORT.search(doc)
        assert match, f"pipeline/{name}/__init__.py's docstring has no 'May import: ...' line"
        names = match["names"]
        rules[name] = set() if names.startswith("nothing") else {n.strip() for n in names.split(",")}
    return rules


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> Iterable[str]:
    """Every pipeline module `path` imports, at its top or inside a function, as absolute names."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if node.module is None:  # from . import a, b: modules (or names) of that package
                yield from (f"{target}.{alias.name}" for alias in node.names)
            else:
                yield target
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def edges() -> dict[str, set[str]]:
    """Module -> the pipeline modules it imports."""
    return {module_name(path): {t for t in imports_of(path) if t == "pipeline" or t.startswith("pipeline.")}
            for path in PACKAGE.rglob("*.py")}


def violations(graph: Mapping[str, set[str]], rules: Mapping[str, set[str]]) -> list[str]:
    """Imports that go where the importing package's docstring does not allow."""
    found = []
    for module, targets in sorted(graph.items()):
        parts = module.split(".")
        own = parts[1] if len(parts) > 2 or module.endswith("__init__") else None
        if len(parts) >= 2 and parts[1] in rules:
            own = parts[1]
        for target in sorted(targets):
            tparts = target.split(".")
            if len(tparts) < 2 or tparts[1] == "__version__":
                continue  # the package itself (its version): every layer may
            other = tparts[1]
            if other not in rules or other == own:
                continue
            if own is None:  # pipeline/__main__.py and pipeline/__init__.py
                if module == "pipeline.__main__" and other != "cli":
                    found.append(f"{module} -> {target} (python -m pipeline only starts the cli)")
                continue
            if other not in rules[own]:
                found.append(f"{module} -> {target} ({own} may import: {', '.join(sorted(rules[own])) or 'nothing'})")
    return found


def test_every_import_goes_down_the_layers():
    """No module imports a package its own package's docstring does not allow (a lower layer never
    imports a higher one; the CLI-only commands are imported by the CLI alone)."""
    assert violations(edges(), allowed(packages())) == []


@pytest.mark.parametrize(("module", "target"), [
    ("pipeline.config.load", "pipeline.service.client"),  # config took build_base_url from the client
    ("pipeline.engine.runner", "pipeline.cli.validate"),  # the run took the cost model from a command
    ("pipeline.observe.report", "pipeline.state.checkpoint"),  # the report read the checkpoint store
    ("pipeline.manifest.item", "pipeline.config.checks"),  # the manifest took fill_output from config checks
    ("pipeline.service.client", "pipeline.pacing.memory"),  # the client took Lane from a pacer backend
    ("pipeline.__main__", "pipeline.engine.runner"),
])
def test_the_rule_catches_the_imports_that_went_up(module, target):
    """Each import that once crossed the layers the wrong way would fail the test above."""
    assert violations({module: {target}}, allowed(packages()))


def test_every_package_says_what_lives_there():
    """Each package's docstring opens with what lives there, before its import rule."""
    for name, doc in packages().items():
        assert doc and not doc.startswith("May import"), name


def readme_table(docs: Mapping[str, str]) -> str:
    """The README's map of packages: each package, what lives there (its docstring's first
    paragraph) and its modules."""
    rules = allowed(docs)
    depth: dict[str, int] = {}

    def level(name: str) -> int:  # 0 for core; one above the highest package it may import
        if name not in depth:
            depth[name] = 1 + max((level(other) for other in rules[name] if other in rules), default=-1)
        return depth[name]

    rows = ["| package | what lives there | modules |", "|---|---|---|"]
    for name, doc in sorted(docs.items(), key=lambda item: (level(item[0]), item[0])):
        first = " ".join(doc.split("\n\n")[0].split())
        modules = ", ".join(f"`{p.stem}`" for p in sorted((PACKAGE / name).glob("*.py")) if p.stem != "__init__")
        rows.append(f"| `{name}/` | {first} | {modules} |")
    return "\n".join(rows)


def test_the_readme_module_map_is_the_package_docstrings():
    """README's package table is generated from the docstrings (`python tests/test_layers.py` rewrites it)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    assert readme[start:end].strip() == readme_table(packages()), \
        "README's package map is stale: run `python tests/test_layers.py` to rewrite it"


@pytest.mark.parametrize("argv", [["--version"], ["validate", "MANIFEST"], ["status", "--state-dir", "STATE"]])
def test_read_only_commands_import_no_http_library(tmp_path, argv):
    """--version, validate and status start without aiohttp (or the SDKs): start-up pays only for what it uses."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "capability": "image_analyze", "url": "https://example.com/a.jpg"}\n')
    argv = [str(manifest) if a == "MANIFEST" else str(tmp_path / "none") if a == "STATE" else a for a in argv]
    code = ("import sys, runpy; sys.argv = ['pipeline', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('pipeline', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('aiohttp', 'alibabacloud_oss_v2', 'redis', 'prometheus_client'))\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=cli_env(),
                          cwd=REPO, timeout=60, check=False)
    assert "HEAVY []" in done.stderr, done.stderr[-2000:]


if __name__ == "__main__":  # rewrite README's package map from the docstrings
    path = REPO / "README.md"
    text = path.read_text(encoding="utf-8")
    start, end = text.index(README_START) + len(README_START), text.index(README_END)
    path.write_text(text[:start] + "\n" + readme_table(packages()) + "\n" + text[end:], encoding="utf-8")
