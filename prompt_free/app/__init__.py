"""The Gradio app: one module per tab (layout only), shared widgets, the one generic endpoint.

``build_app(engine)`` makes the Blocks; ``main`` (``prompt_free.app.main``) parses the options
and launches. The library never imports this package.
"""

from __future__ import annotations

import os

# Gradio's usage analytics stay off unless the user asks for them (GRADIO_ANALYTICS_ENABLED=true);
# set before gradio is imported, which reads it at import time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _import_spaces_first() -> None:
    """On a ZeroGPU Space ``spaces`` must be imported before torch (docs/spaces.md)."""
    from .. import settings  # light: prompt_free imports torch only when a model name is used

    if settings.zero_gpu():
        try:
            import spaces  # noqa: F401
        except ImportError:
            pass  # zerogpu.spaces_module warns and the app runs without ZeroGPU


_import_spaces_first()

from prompt_free.extras import require  # noqa: E402

require("app", "the app (prompt_free.app)")  # without gradio: one line saying what to install


from .build import TABS, build_app  # noqa: E402

__all__ = ["TABS", "build_app"]
