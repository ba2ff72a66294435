"""The shape the code keeps (issue 25): no import cycle, the library never imports its front ends,
small functions, modules and classes, one place per setting, an installed wheel with no generic
top-level names. Read from the source with ``ast`` (imports inside functions count too)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from tests.helpers.app import ROOT

PACKAGE = ROOT / "prompt_free"
FRONT_ENDS = ("prompt_free.app", "prompt_free.cli", "prompt_free.__main__")  # they may import the library
MAX_FUNCTION, MAX_MODULE, MAX_CLASS = 80, 500, 300
ONE_PLACE = {"reference_strength": 4, "deep_cache": 4}  # a setting: its declaration and its uses


def _modules() -> Dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Set[str]:
    """The project modules ``name`` imports anywhere in its file (``from pkg import mod`` counts
    as importing ``pkg.mod`` only)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            targets = subs + ([base] if len(subs) < len(node.names) else [])
        else:
            continue
        for t in targets:
            while t and t not in MODULES:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles() -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert _cycles() == []


def test_the_library_never_imports_its_front_ends():
    core = [m for m in MODULES if not m.startswith(FRONT_ENDS)]
    bad = [(m, t) for m in core for t in GRAPH[m] if t.startswith(FRONT_ENDS)]
    assert bad == []
    for m in core:  # nor the checkout's app script
        assert not re.search(r"^\s*(import app\b|from app\b)", MODULES[m].read_text(), re.M), m


def _sizes() -> Iterator[Tuple[str, str, int]]:
    for name, path in MODULES.items():
        text = path.read_text()
        yield "module", name, len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                kind = "class" if isinstance(node, ast.ClassDef) else "function"
                yield kind, f"{name}.{node.name}", node.end_lineno - node.lineno + 1


def test_functions_modules_and_classes_stay_small():
    limits = {"function": MAX_FUNCTION, "module": MAX_MODULE, "class": MAX_CLASS}
    over = [(kind, name, n) for kind, name, n in _sizes() if n > limits[kind]]
    assert over == [], f"over the limits {limits}: {over}"


@pytest.mark.parametrize("word", sorted(ONE_PLACE))
def test_a_setting_lives_in_few_places(word):
    files = sorted(str(p.relative_to(ROOT)) for p in MODULES.values() if re.search(rf"\b{word}\b", p.read_text()))
    assert len(files) <= ONE_PLACE[word], files


@pytest.mark.timeout(300)
def test_the_wheel_installs_no_generic_top_level_names(tmp_path):
    """A real wheel of the project, built from a copy (setuptools writes build/ beside the
    sources): its top-level names are the library's only."""
    source = tmp_path / "source"
    for name in ("pyproject.toml", "README.md", "checkpoints.yaml", "configs", "prompt_free", "app.py"):
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(path, source / name)
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(source)], capture_output=True, text=True)
    if done.returncode != 0 and "No module named" in done.stderr and "setuptools" in done.stderr:
        pytest.skip("setuptools is not installed here")  # pip's own build backend
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"prompt_free"}, top
    assert "prompt_free/app/build.py" in names and "prompt_free/checkpoints.yaml" in names
