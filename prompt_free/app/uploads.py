"""Image inputs whose uploads reach the project's one opener undecoded.

Gradio 6.31's ``gr.Image.preprocess`` (``image_utils.preprocess_image``) opens every upload with
PIL itself, even with ``type="filepath"``, and converts it to ``image_mode`` ("RGB" by default)
by dropping the alpha channel, and ``gr.ImageEditor`` converts every layer. So a corrupt, empty
or decompression-bomb upload failed inside Gradio (a bare "Error", a server traceback),
transparent areas came out black, 16-bit maps saturated and masks skipped the size guard.

``image_input`` and ``mask_editor`` build the same components (``gr.Image`` and
``gr.ImageEditor``: the same in the browser, the API info and the endpoints' parameters) with
their ``preprocess`` replaced on the instance: the handler gets the uploaded file's path (in
Gradio's cache) untouched, and the task opens it with ``prompt_free.images.load_image`` /
``open_image``: EXIF rotation, alpha over white, 16-bit scaled, the pixel limit from the header,
the first frame of an animation, and one clear ``InputImageError`` naming the input for anything
unreadable. (Instances, not subclasses: Gradio's component metaclass writes a ``.pyi`` stub
beside the source file of every subclass it sees.)
"""

from __future__ import annotations

import base64
import binascii
import types

import gradio as gr
from gradio import processing_utils
from gradio.data_classes import FileData

from . import cache_files


def image_input(**kwargs) -> gr.Image:
    """``gr.Image(type="filepath")`` whose upload is passed on as the path of the uploaded file."""
    image = gr.Image(type="filepath", image_mode=kwargs.pop("image_mode", None), **kwargs)
    image.preprocess = types.MethodType(_image_preprocess, image)
    return image


def _image_preprocess(self: gr.Image, payload):
    if payload is None:
        return None
    if payload.url and payload.url.startswith("data:"):  # a pasted / webcam image sent inline
        return _data_url_to_cache(payload.url, payload.orig_name, self.GRADIO_CACHE)
    if payload.path is None:
        raise gr.Error(f"{(self.label or 'image').lower()}: no file was received")
    return str(payload.path)


def mask_editor(**kwargs) -> gr.ImageEditor:
    """``gr.ImageEditor`` whose background, layers and composite are passed on as file paths
    (or the bytes the browser sent), each opened later by the project's opener."""
    editor = gr.ImageEditor(**kwargs)
    editor.convert_and_format_image = types.MethodType(_editor_file, editor)
    return editor


def _editor_file(self: gr.ImageEditor, file, flatten_on_white: bool = False):
    if file is None:
        return None
    if isinstance(file, FileData):
        return str(file.path)
    return bytes(file)


def _data_url_to_cache(url: str, orig_name, cache_dir: str) -> str:
    """The bytes of a ``data:`` URL as a file in Gradio's cache, tracked for the cleanup (no
    decoding here)."""
    try:
        data = base64.b64decode(processing_utils.extract_base64_data(url), validate=False)
    except (binascii.Error, ValueError):
        data = b""
    return cache_files.save_bytes(data, orig_name or "image", cache_dir)
