"""A real task run on a JPEG whose EXIF block is damaged (issue 28, item 2): the picture as
stored, never "Unexpected error". Tiny profile, one step."""

from __future__ import annotations

from PIL import Image

from tests.helpers import formats as F
from tests.helpers.app import EXAMPLES


def test_a_task_runs_on_the_damaged_exif_jpeg(tmp_path):
    from prompt_free.engine import Engine
    from prompt_free.tasks import VariationSettings, image_variation

    # all plugins loaded first: whether Pillow raised depended on which were (issue 28)
    Image.init()
    engine = Engine.from_profile("tiny", device="cpu")
    reference = Image.open(EXAMPLES / "chelsea.jpg").convert("RGB").resize((64, 48))
    (tmp_path / "damaged.jpg").write_bytes(F.damaged_exif_jpeg(reference))
    result = image_variation(engine, str(tmp_path / "damaged.jpg"), VariationSettings(steps=1, width=64, height=64))
    assert len(result.images) == 1 and result.images[0].size == (64, 64)
