"""The Gradio app's blocks: the tabs (one module each), the banner and the memory panel, one engine."""

from __future__ import annotations

import gradio as gr

from . import runner as runners
from . import cache_files, compare, control, edit, multi_reference, session_limit, tryon, variation, zerogpu
from prompt_free import settings

from .widgets import banner, memory_panel

# The tabs in display order; each module has build(engine).
TABS = (variation, control, multi_reference, compare, edit, tryon)


def build_app(engine, runner=None, concurrency=None) -> gr.Blocks:
    """The app over ``engine``; the engine's tqdm step bars are turned off: each tab shows its own
    progress, and Gradio would track a bar as a second one (and it would fill the server's log).
    ``runner``: where the tabs' work runs (``runner.OnTier``; None: on ``engine`` here);
    ``concurrency``: requests Gradio lets run at once (None: ``settings.CONCURRENT_REQUESTS``)."""
    engine.set_progress_bar_config(disable=True)
    cache_files.install()  # every output picture a file of its own, tracked for the cleanup
    zerogpu.place_models(engine)  # on ZeroGPU every selectable model is loaded at start; elsewhere nothing
    # Uploads and outputs leave Gradio's cache after settings.cache_max_age(); no analytics unless asked.
    with gr.Blocks(title="Prompt-Free Diffusion", delete_cache=settings.delete_cache(),
                   analytics_enabled=settings.analytics_enabled()) as demo:
        gr.Markdown(
            "# Prompt-Free Diffusion\n"
            "Image generation from a reference image instead of a text prompt "
            "(SeeCoder, Xu et al., CVPR 2024)."
        )
        banner(engine)
        with gr.Tabs(), runners.using(runner):
            for tab in TABS:
                tab.build(engine)
        memory_panel(engine, demo)
    cache_files.track(demo)  # outputs join the cleanup (cache_files: what Gradio misses)
    # Gradio would run one request per event at a time; the engine serialises device work itself.
    # A full queue answers "Queue is full ... try again"; a session may have at most
    # settings.max_session_requests() requests waiting or running (session_limit).
    demo.queue(max_size=settings.QUEUE_SIZE, default_concurrency_limit=concurrency or settings.CONCURRENT_REQUESTS)
    session_limit.install(demo)
    return demo
