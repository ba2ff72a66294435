"""Output pictures and Gradio's cache cleanup (``delete_cache``, ``settings.cache_max_age()``).

How Gradio 6.31 cleans its cache: every ``frequency`` seconds ``route_utils.
delete_files_created_by_app`` walks ``blocks.temp_file_sets`` (the uploads' set
``blocks.upload_file_set`` and each rendered component's ``temp_files``), skips the files a
component keeps (``keep_in_cache``: its default value and its ``gr.Examples``), and removes
those whose ``st_ctime`` is older than the age. It missed three things here (seen in
``benchmarks/bench_load.py``: 41 of 42 files left after a cleanup pass, and a 403):

- **Outputs were never tracked.** A handler's update (our cancellable endpoints yield
  ``gr.skip()`` while they wait, ``ui.endpoint``) makes Gradio put a fresh, unrendered copy of
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
before it is whole) and records it in the ``OutputFiles`` set of its cache folder, which
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


class OutputFiles(TrackedFiles):
    """Output pictures, one per folder of their own; Gradio's cleanup ends with ``temp_set -=
    removed``, and then their emptied folders go too."""

    def __isub__(self, removed):
        super().__isub__(removed)
        for path in removed:
            try:
                os.rmdir(os.path.dirname(path))
            except OSError:  # not empty or already gone
                pass
        return self


_OUTPUTS: dict = {}  # real path of a cache folder -> its OutputFiles


def output_files(cache_dir) -> OutputFiles:
    """The tracked output pictures of one cache folder."""
    return _OUTPUTS.setdefault(os.path.realpath(cache_dir), OutputFiles())


def track(demo) -> OutputFiles:
    """Make ``demo``'s cleanup complete and safe: its file sets become ``TrackedFiles`` and the
    output pictures of its cache folder (``output_files``) join them. Call once it is built."""
    safe = {}
    for s in demo.temp_file_sets:
        safe[id(s)] = s if isinstance(s, TrackedFiles) else TrackedFiles(s)
    demo.upload_file_set = safe.get(id(demo.upload_file_set)) or TrackedFiles(demo.upload_file_set)
    for block in demo.blocks.values():
        files = getattr(block, "temp_files", None)
        if files is not None and id(files) in safe:
            block.temp_files = safe[id(files)]
    outputs = output_files(demo.GRADIO_CACHE)
    demo.temp_file_sets = [demo.upload_file_set] + [s for s in safe.values() if s is not demo.upload_file_set
                                                    and s is not outputs] + [outputs]
    return outputs


def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    data = processing_utils.encode_pil_to_bytes(img, format)
    folder = Path(cache_dir) / secrets.token_hex(16)
    folder.mkdir(parents=True)
    path = (folder / f"{name}.{format}").resolve()
    path.write_bytes(data)  # a new path: nobody is handed it before this returns
    outputs = _OUTPUTS.get(os.path.realpath(cache_dir))  # None: no app serves from this folder
    if outputs is not None:
        outputs.add(str(path))
    return str(path)


save_pil_to_cache.pfd_cache_files = True


def install() -> None:
    if not getattr(processing_utils.save_pil_to_cache, "pfd_cache_files", False):
        processing_utils.save_pil_to_cache = save_pil_to_cache
