"""Optional parts of the package (``[project.optional-dependencies]`` of pyproject.toml) and the
one message a missing one gives: which extra, and the command that installs it.

Imports only the standard library (and the extra's modules when asked), so a front end can check
before it imports anything that needs the extra.
"""

from __future__ import annotations

import importlib

from .errors import PromptFreeError

# The modules each extra brings that the package imports (pyproject.toml's lists).
EXTRAS = {"app": ("gradio", "gradio_client"), "serve": ("ray", "ray.serve", "ray.data")}


class MissingExtraError(PromptFreeError, ImportError):
    """A command needs an optional part of the package that is not installed (an ``ImportError``
    too, so code that imports the part and catches that keeps working)."""


def require(extra: str, what: str) -> None:
    """Import the modules of ``extra``; one that cannot be imported is a ``MissingExtraError``
    saying that ``what`` needs the extra and how to install it (one line)."""
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ImportError as e:
            # a module that is there but fails to import says why (a broken installation)
            cause = f"{module} is not installed" if _absent(e, module) else f"{module} does not import: {e}"
            raise MissingExtraError(f'{what} needs the {extra} extra ({cause}): pip install ".[{extra}]" '
                                    "(in the checkout)") from None


def _absent(error: ImportError, module: str) -> bool:
    return isinstance(error, ModuleNotFoundError) and (error.name == module or error.name is None)
