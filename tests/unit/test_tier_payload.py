"""Issue 27: a task's result crosses from a replica as PNG bytes and comes back the same:
pixels, metadata chunks, and the structure (one picture shared by two places stays one)."""

from __future__ import annotations

import pickle

import numpy as np
from PIL import Image

from prompt_free.metadata import JSON_CHUNK, PARAMETERS_CHUNK
from prompt_free.scale import payload
from prompt_free.tasks.compare import ColumnResult, CompareResult


def _picture(seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).convert(mode)
    img.info[PARAMETERS_CHUNK] = f"Seed: {seed}"
    img.info[JSON_CHUNK] = '{"seed": %d}' % seed
    return img


def test_pictures_come_back_with_their_pixels_metadata_and_sharing():
    shared, extra, side = _picture(1), _picture(2, "L"), _picture(3)
    column = ColumnResult("prompt_free", "Prompt-Free", shared, "SeeCoder", ["structure: openpose"], False, True,
                          extras=[extra])
    result = CompareResult(images=[shared], extras=[extra], info={"seeds": [1], "note": "x"},
                           columns={"prompt_free": column}, side_by_side=side)
    packed = payload.pack((result, [shared, extra]))
    assert not any(isinstance(v, Image.Image) for v in (packed[0].images + packed[0].extras))
    back, pictures = payload.unpack(pickle.loads(pickle.dumps(packed)))
    assert back.info == result.info and type(back) is CompareResult
    for original, copy in ((shared, back.images[0]), (extra, back.extras[0]), (side, back.side_by_side)):
        assert copy.mode == original.mode and np.array_equal(np.asarray(copy), np.asarray(original))
        assert copy.info[PARAMETERS_CHUNK] == original.info[PARAMETERS_CHUNK]
        assert copy.info[JSON_CHUNK] == original.info[JSON_CHUNK]
    assert pictures[0] is back.images[0] and pictures[1] is back.extras[0]
    assert back.columns["prompt_free"].image is back.images[0] and back.columns["prompt_free"].extras[0] is back.extras[0]
    assert result.images[0] is shared  # the result given is left as it was
