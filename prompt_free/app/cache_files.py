"""Output pictures and Gradio's cache cleanup (``delete_cache``, ``settings.cache_max_age()``).

How Gradio 6.31 cleans its cache: every ``frequency`` seconds ``route_utils.
delete_files_created_by_app`` walks ``blocks.temp_file_sets`` (the uploads' set
``blocks.upload_file_set`` and each rendered component's ``temp_files``), skips the files a
component keeps (``keep_in_cache``: its default value and its ``gr.Examples``), and removes
those whose ``st_ctime`` is older than the age. It missed three things here (seen in
``benchmarks/bench_load.py``: 41 of 42 files left after a cleanup pass, and a 403):

- **Outputs were never tracked.** A handler's update (our cancellable endpoints yield
  ``gr.skip()`` while they wait, ``prompt_free.app.endpoint``) makes Gradio put a fresh, unrendered copy of
  each output component into the session's state; the final pictures are postprocessed by that
  copy, whose ``temp_files`` is in no ``temp_file_sets``. So output pictures and the comparison
  download stayed until the server stopped.
- **Outputs were content-addressed** (``processing_utils.save_pil_to_cache``: the folder is the
  hash of the PNG bytes). A request that made the same picture as an older one was handed the
  old file; a cleanup pass in between removed it and the download got a 403.
- **The sets are iterated while requests add to them** (cleanup runs in a worker thread), and a
  "set changed size during iteration" would end Gradio's cleanup task for good.

So ``save_pil_to_cache`` (installed in ``gradio.processing_utils``, where Image, Gallery and
``save_img_array_to_cache`` look it up) writes every picture to a folder of its own
(``<cache>/<random>/<name>.<format>``: no later request is ever handed it, and nothing reads it
before it is whole) and records it in the ``AppFiles`` set of its cache folder (so does
``save_bytes``, which ``prompt_free.app.uploads`` uses for an image pasted as a ``data:`` URL), which
``track(demo)`` adds to ``demo.temp_file_sets`` and which removes the emptied folder after
Gradio deletes the file. (By folder, not by app: Gallery saves its pictures in a thread pool,
where Gradio's context naming the app is not set. Apps of one process that share a folder share
the set: each one's cleanup removes the others' expired outputs too, and the first to stop
removes them all, as Gradio does with every tracked file at shutdown.) ``track`` also makes
every set of the app safe to iterate while it grows (``TrackedFiles``).

What stays: the example images of the tabs' ``gr.Examples`` (``assets/examples``), kept by
Gradio on purpose; an upload byte for byte equal to one of them lands on the same cached file
(uploads are content-addressed too) and stays with it. A picture saved to a folder no app serves
from is not tracked. Everything else is removed once older than the age,
so the age must exceed the longest wait in the queue plus a run (the default is an hour).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from gradio import processing_utils


class TrackedFiles(set):
    """A set of cached file paths that Gradio's cleanup can iterate while requests add to it:
    iteration walks a copy (``set.copy`` runs in one step under the GIL)."""

    def __iter__(self):
        return iter(set.copy(self))


class AppFiles(TrackedFiles):
    """Files the app writes into the cache (output pictures, pasted images), one per folder of
    their own; Gradio's cleanup ends with ``temp_set -=
    removed``, and then their emptied folders go too."""

    def __isub__(self, removed):
        super().__isub__(removed)
        for path in removed:
            _remove_folder(path)
        return self

    def __iter__(self):
        # A file another of Gradio's sets removed first (it skips files already gone) is dropped
        # here, at the next cleanup pass, with its folder.
        paths = set.copy(self)
        gone = {p for p in paths if not os.path.exists(p)}
        if gone:
            set.__isub__(self, gone)
            for path in gone:
                _remove_folder(path)
        return iter(paths - gone)


def _remove_folder(path: str) -> None:
    try:
        os.rmdir(os.path.dirname(path))
    except OSError:  # not empty or already gone
        pass


_APP_FILES: dict = {}  # real path of a cache folder -> its AppFiles


def app_files(cache_dir) -> AppFiles:
    """The tracked files the app wrote into one cache folder."""
    return _APP_FILES.setdefault(os.path.realpath(cache_dir), AppFiles())


def track(demo) -> AppFiles:
    """Make ``demo``'s cleanup complete and safe: its file sets become ``TrackedFiles`` and the
    files the app writes into its cache folder (``app_files``) join them. Call once it is built."""
    safe = {id(s): s if isinstance(s, TrackedFiles) else TrackedFiles(s) for s in demo.temp_file_sets}
    uploads = safe.get(id(demo.upload_file_set))
    if uploads is None:
        uploads = safe[id(demo.upload_file_set)] = TrackedFiles(demo.upload_file_set)
    demo.upload_file_set = uploads  # what Gradio's upload route adds to
    for block in demo.blocks.values():
        files = getattr(block, "temp_files", None)
        if files is not None and id(files) in safe:
            block.temp_files = safe[id(files)]
    own = app_files(demo.GRADIO_CACHE)
    demo.temp_file_sets = [s for s in safe.values() if s is not own] + [own]
    return own


def save_bytes(data: bytes, file_name: str, cache_dir) -> str:
    """``data`` as ``<cache_dir>/<random>/<file_name>``, tracked for the cleanup."""
    folder = Path(cache_dir) / secrets.token_hex(16)
    folder.mkdir(parents=True)
    path = (folder / Path(file_name).name).resolve()
    path.write_bytes(data)  # a new path: nobody is handed it before this returns
    tracked = _APP_FILES.get(os.path.realpath(cache_dir))  # None: no app serves from this folder
    if tracked is not None:
        tracked.add(str(path))
    return str(path)


def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    return save_bytes(processing_utils.encode_pil_to_bytes(img, format), f"{name}.{format}", cache_dir)


save_pil_to_cache.pfd_cache_files = True


def install() -> None:
    if not getattr(processing_utils.save_pil_to_cache, "pfd_cache_files", False):
        processing_utils.save_pil_to_cache = save_pil_to_cache
