"""Tasks: user inputs -> engine calls -> images. One module per task; the tasks are listed once,
in ``prompt_free.catalog.TASKS``, and this package exports what that list names."""

from __future__ import annotations

import importlib

from ..catalog import TASKS, TaskRequest, TaskSpec, public_names

for _name, _module in public_names().items():
    globals()[_name] = getattr(importlib.import_module(f".{_module}", __name__), _name)

__all__ = sorted(public_names()) + ["TASKS", "TaskRequest", "TaskSpec"]
