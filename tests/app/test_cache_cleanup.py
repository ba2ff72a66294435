"""Issue 13: Gradio's cache cleanup (``PFD_CACHE_MAX_AGE``) really removes uploads and output
pictures once they are older than the age, keeps the tabs' example images, and a request made
right after (or across) a cleanup pass is served: every output is a file of its own
(``prompt_free/app/cache_files.py``), so a pass never removes a file that a later request is serving."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.timeout(300)

AGE_S = 3  # Gradio then looks every 3 s (settings.delete_cache)


def _files(folder: Path) -> set:
    return {str(p) for p in folder.rglob("*") if p.is_file()}


def _digest(gallery) -> str:
    h = hashlib.sha256()
    for item in gallery:
        h.update(np.asarray(Image.open(item["image"])).tobytes())
    return h.hexdigest()


def test_uploads_and_outputs_leave_the_cache_after_the_age_and_later_requests_are_served(monkeypatch, tmp_path):
    from gradio_client import Client, handle_file

    from tests.helpers.app import running_app
    from prompt_free.app.cache_files import app_files

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    monkeypatch.setenv("PFD_CACHE_MAX_AGE", str(AGE_S))
    reference = tmp_path / "my-holiday.png"  # not one of the examples
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(reference)
    args = [handle_file(str(reference)), "SeeCoder", "Tiny SD", 2.0, 2, 64, 64, 5, False, 1, "DDIM"]

    with running_app("tiny") as (engine, demo, url):
        examples = _files(cache)  # the gr.Examples' images, cached at build time
        assert examples and all(os.path.basename(os.path.dirname(os.path.dirname(p))) == cache.name for p in examples)
        client = Client(url, verbose=False, download_files=str(tmp_path / "client"))
        seen, watching = set(), threading.Event()

        def watch():  # every file that appears in the cache (a slow first run may outlive the age)
            while not watching.is_set():
                seen.update(_files(cache))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            first = _digest(client.predict(*args, api_name="/image_variation")[0])
            outputs_first = set(app_files(cache))
        finally:
            watching.set()
            watcher.join()
        assert [p for p in seen if p.endswith("my-holiday.png")], "the upload never reached the cache"
        assert outputs_first & seen, "the output picture is not tracked for the cleanup"

        # the same request again: the same picture, in a file of its own (never the older one)
        assert _digest(client.predict(*args, api_name="/image_variation")[0]) == first
        outputs_second = set(app_files(cache)) - outputs_first
        assert outputs_second and not outputs_second & outputs_first

        # requests go on across cleanup passes; every one is served with its own picture
        deadline, served = time.time() + 3 * AGE_S + 2, 0
        while time.time() < deadline:
            assert _digest(client.predict(*args, api_name="/image_variation")[0]) == first
            served += 1
        assert served >= 3

        # left alone, everything but the examples goes, folders of the outputs included
        deadline = time.time() + 4 * AGE_S + 5

        def output_folders():
            return [p for p in outputs_first | outputs_second if os.path.exists(os.path.dirname(p))]

        while (_files(cache) - examples or output_folders()) and time.time() < deadline:
            time.sleep(0.5)
        assert _files(cache) - examples == set(), "uploads or outputs older than the age are still there"
        assert examples <= _files(cache), "an example image was removed"
        assert not any(os.path.exists(os.path.dirname(p)) for p in outputs_first | outputs_second)

        # right after a cleanup pass a request is served as ever
        assert _digest(client.predict(*args, api_name="/image_variation")[0]) == first
