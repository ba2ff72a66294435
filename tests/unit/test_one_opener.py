"""One opener for every image (issue 28): ``prompt_free/images.py: open_lazy`` is the only
``Image.open`` of the project's code (library, app, CLI, training, scripts, assets' scripts,
benchmarks), so its format allowlist, and EXIF's ``exif_transpose``, are in one place. Read
with ``ast``: any spelling of PIL's ``Image.open`` counts (``PIL.Image.open``, an alias,
``from PIL.Image import open``). The tests themselves may open the files they wrote."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import List

from tests.helpers.app import ROOT

OPENER = ROOT / "prompt_free" / "images.py"
SKIP_DIRS = {".venv", ".git", "tests", "node_modules", "build", "dist", "__pycache__"}
FORBIDDEN = {"open": "Image.open", "exif_transpose": "ImageOps.exif_transpose"}


def _project_files() -> List[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if not SKIP_DIRS.intersection(p.relative_to(ROOT).parts[:-1]) and p != OPENER)


def _pil_names(tree: ast.AST) -> dict:
    """Local names bound to PIL's ``Image`` / ``ImageOps`` modules, and to ``PIL`` itself."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "PIL":
            names.update({(a.asname or a.name): a.name for a in node.names if a.name in ("Image", "ImageOps")})
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("PIL"):
                    names[a.asname or "PIL"] = a.name if a.asname else "PIL"
    return names


def _is_module(node: ast.AST, names: dict, module: str) -> bool:
    if isinstance(node, ast.Name):
        return names.get(node.id) in (module, f"PIL.{module}")
    return (isinstance(node, ast.Attribute) and node.attr == module and isinstance(node.value, ast.Name)
            and names.get(node.value.id) == "PIL")


def bare_opens(source: str) -> List[str]:
    """``line: call`` for every use of Image.open or ImageOps.exif_transpose in ``source``."""
    tree = ast.parse(source)
    names, found = _pil_names(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN:
            module = FORBIDDEN[node.attr].split(".")[0]
            if _is_module(node.value, names, module):
                found.append(f"{node.lineno}: {FORBIDDEN[node.attr]}")
        elif isinstance(node, ast.ImportFrom) and node.module in ("PIL.Image", "PIL.ImageOps"):
            found += [f"{node.lineno}: from {node.module} import {a.name}" for a in node.names if a.name in FORBIDDEN]
    return found


def test_the_check_sees_every_spelling():
    assert bare_opens("from PIL import Image\nImage.open(p)\n") == ["2: Image.open"]
    assert bare_opens("import PIL.Image\nPIL.Image.open(p)\n") == ["2: Image.open"]
    assert bare_opens("from PIL import Image as I\nwith I.open(p) as f: pass\n") == ["2: Image.open"]
    assert bare_opens("from PIL.Image import open as o\n") == ["1: from PIL.Image import open"]
    assert bare_opens("from PIL import ImageOps\nImageOps.exif_transpose(i)\n") == ["2: ImageOps.exif_transpose"]
    assert bare_opens("from PIL import Image\nopen(p)\nImage.new('RGB', (1, 1))\nf.open()\n") == []


def test_images_are_opened_in_one_place_only():
    files = _project_files()
    assert ROOT / "prompt_free" / "train" / "data.py" in files and ROOT / "app.py" in files
    offenders = [f"{p.relative_to(ROOT)}:{hit}" for p in files for hit in bare_opens(p.read_text())]
    assert not offenders, ("open images with prompt_free.images (open_image / load_image / open_lazy), which reads "
                           "the allowed formats only: " + "; ".join(offenders))
    in_opener = [hit.split(": ")[1] for hit in bare_opens(OPENER.read_text())]
    assert sorted(in_opener) == ["Image.open", "ImageOps.exif_transpose"]  # each once, in the opener
