"""The text/reference balance (issue 26, control 8) on the tiny profile: off (None, not given) is
today's picture bit for bit; with a prompt the text tokens' attention share on the first step,
measured here independently (hooks on every cross-attention of the UNet: the layer's own
projections and an explicit softmax of the logits plus the bias its processor applies), follows
the slider; 0 and 1 change the picture; the redo (PNG) is bit for bit; bad values and the
cases without a concat prompt are refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free.balance import Balance, solve_bias
from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError
from prompt_free.metadata import read, redo_call, save_png, tag
from prompt_free.tasks import ControlSettings, VariationSettings, image_variation
from prompt_free.tasks.reference import ReferenceOptions
from tests.helpers.app import EXAMPLES
from tests.helpers.cli import TINY, pixels, run

pytestmark = pytest.mark.timeout(600)

RUN = dict(width=64, height=64, steps=2, seed=5, guidance=2.0, prompt="a red car")
TEXT_TOKENS = 77


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


@pytest.fixture(scope="module")
def reference():
    return Image.open(EXAMPLES / "chelsea.jpg").convert("RGB").resize((64, 48), Image.BICUBIC)


def variation(engine, reference, **kw):
    return image_variation(engine, reference, VariationSettings(**{**RUN, **kw}))


def px(result):
    return np.asarray(result.images[0] if hasattr(result, "images") else result, dtype=np.int16)


def measured_share(engine, reference, **kw) -> float:
    """The text tokens' attention share on the run's first step, averaged over the UNet's
    cross-attention layers: each layer's first call, recomputed here from its inputs."""
    unet = engine.base_model("Tiny SD").unet
    shares, handles = {}, []

    def probe(name):
        def hook(attn, args, kwargs, output):
            if name in shares:
                return
            h, ctx = args[0], kwargs["encoder_hidden_states"]
            b, heads = h.shape[0], attn.heads
            q = attn.to_q(h).view(b, -1, heads, attn.to_q.out_features // heads).transpose(1, 2).float()
            k = attn.to_k(ctx).view(b, -1, heads, q.shape[-1]).transpose(1, 2).float()
            mask = getattr(attn.processor, "mask", None)  # the bias the run applies (None: no balance)
            logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + (0 if mask is None else mask.float())
            shares[name] = float(torch.softmax(logits, -1)[..., :TEXT_TOKENS].sum(-1).mean())
        return hook

    for name, module in unet.named_modules():
        if name.endswith("attn2"):
            handles.append(module.register_forward_hook(probe(name), with_kwargs=True))
    try:
        result = variation(engine, reference, **kw)
    finally:
        for h in handles:
            h.remove()
    assert len(shares) == len(handles) > 1
    return float(np.mean(list(shares.values()))), result


# ----------------------------------------------------------------------------- neutral
def test_no_balance_is_todays_picture_bit_for_bit(engine, reference):
    plain = variation(engine, reference)
    off = variation(engine, reference, balance=None)
    assert np.array_equal(px(plain), px(off))
    assert "balance" not in off.info and "balance_bias" not in off.info
    assert ReferenceOptions.of(VariationSettings(**RUN)).balance is None


# ----------------------------------------------------------------------------- the share follows the slider
@pytest.mark.parametrize("value", [0.25, 0.5, 0.75])
def test_measured_text_share_follows_the_balance(engine, reference, value):
    share, result = measured_share(engine, reference, balance=value)
    assert abs(share - value) <= 0.05, share
    assert result.info["balance"] == value and isinstance(result.info["balance_bias"], float)


def test_without_balance_the_share_is_what_it_is_and_the_ends_mask(engine, reference):
    free, _ = measured_share(engine, reference)
    assert 0.0 < free < 1.0
    assert measured_share(engine, reference, balance=0)[0] == pytest.approx(0.0, abs=1e-6)
    assert measured_share(engine, reference, balance=1)[0] == pytest.approx(1.0, abs=1e-6)


def test_ends_change_the_picture_and_report_their_mask(engine, reference):
    plain = px(variation(engine, reference))
    for value, bias in ((0.0, "-inf"), (1.0, "+inf")):
        r = variation(engine, reference, balance=value)
        assert not np.array_equal(px(r), plain) and r.info["balance_bias"] == bias
    assert not np.array_equal(px(variation(engine, reference, balance=0.0)),
                              px(variation(engine, reference, balance=1.0)))


def test_balance_zero_is_the_reference_without_the_text(engine, reference):
    """0 masks the text tokens: the UNet sees the reference's tokens alone, as without a prompt
    (the prompt still loads the text encoder; pixels match within float rounding)."""
    no_text = px(variation(engine, reference, prompt=""))
    zero = px(variation(engine, reference, balance=0.0))
    assert np.abs(zero - no_text).max() <= 2


def test_solve_bias_hits_the_target():
    z = torch.linspace(-3, 2, 101)
    for target in (0.1, 0.5, 0.9):
        b = solve_bias(z, target)
        assert float(torch.sigmoid(z + b).mean()) == pytest.approx(target, abs=1e-5)


def test_quick_mode_and_redo_are_deterministic(engine, reference, tmp_path):
    a = variation(engine, reference, balance=0.4, deep_cache=2)
    b = variation(engine, reference, balance=0.4, deep_cache=2)
    assert np.array_equal(px(a), px(b)) and a.info["balance_bias"] == b.info["balance_bias"]
    s = VariationSettings(**RUN, balance=0.4)
    ref = tmp_path / "ref.png"
    reference.save(ref)
    result = image_variation(engine, str(ref), s)
    out = save_png(tag(engine, result, "image_variation", s, {"reference": str(ref)})[0], tmp_path / "out.png")
    rec = read(out)
    assert rec["settings"]["balance"] == 0.4 and rec["run"]["balance_bias"] == result.info["balance_bias"]
    params = Image.open(out).info["parameters"]
    assert "Balance: 0.4" in params and f"Balance bias: {result.info['balance_bias']:g}" in params
    _, again = redo_call(rec).run(engine)
    assert np.array_equal(np.asarray(again), np.asarray(result.images[0]))


def test_cli_balance_reaches_the_task(tmp_path, capsys, engine, reference):
    code, _, err = run(["generate", "--reference", EXAMPLES / "chelsea.jpg", "--prompt", "a red car", "--balance",
                        "0.5", *TINY, "--out", tmp_path / "D"], capsys)
    assert code == 0, err
    out = next((tmp_path / "D").iterdir())
    assert read(out)["settings"]["balance"] == 0.5 and "Balance bias: " in Image.open(out).info["parameters"]


# ----------------------------------------------------------------------------- refused
@pytest.mark.parametrize("kw, message", [
    (dict(balance=1.5), "balance must be between 0 and 1"),
    (dict(balance=-0.1), "balance must be between 0 and 1"),
    (dict(balance=0.5, prompt=""), "give a prompt"),
    (dict(balance=0.5, prompt_mode="style"), "prompt mode concat"),
    (dict(balance=0.5, blocks="style"), "all blocks"),
])
def test_bad_balance_is_refused_before_any_model_loads(kw, message):
    for cls in (VariationSettings, ControlSettings):
        with pytest.raises(InvalidSettingError, match=message):
            ReferenceOptions.of(cls(**{**RUN, **kw}))


def test_bad_balance_is_refused_by_the_task(engine, reference):
    with pytest.raises(InvalidSettingError, match="between 0 and 1"):
        variation(engine, reference, balance=2)
    with pytest.raises(InvalidSettingError, match="give a prompt"):
        variation(engine, reference, balance=0.5, prompt="")


def test_the_patch_puts_the_processors_back(engine, reference):
    unet = engine.base_model("Tiny SD").unet
    before = {k: type(v) for k, v in unet.attn_processors.items()}
    variation(engine, reference, balance=0.5)
    assert {k: type(v) for k, v in unet.attn_processors.items()} == before
    assert Balance(0.5, 77).bias() is None


# ----------------------------------------------------------------------------- the other tabs
POSE = EXAMPLES / "pose_standing.png"


def test_reference_control_and_the_comparisons_text_column_take_the_balance(engine, reference):
    from prompt_free.tasks import CompareSettings, ControlSpec, compare, reference_control
    from prompt_free.tasks.compare import PROMPT_FREE, PROMPT_FREE_TEXT

    def control(**kw):
        return reference_control(engine, reference, [ControlSpec("openpose", POSE, "use as-is", scale=0.9)],
                                 ControlSettings(**{**RUN, **kw}))

    plain, off, half = control(), control(balance=None), control(balance=0.5)
    assert np.array_equal(px(plain), px(off)) and not np.array_equal(px(plain), px(half))
    assert isinstance(half.info["balance_bias"], float)
    s = dict(RUN, control_scale=0.9)
    col = compare(engine, reference, POSE, "openpose", settings=CompareSettings(
        **s, methods=(PROMPT_FREE, PROMPT_FREE_TEXT), balance=0.5)).columns[PROMPT_FREE_TEXT]
    assert "balance 0.5" in col.conditioning and np.array_equal(px(col.image), px(control(balance=0.5)))
    with pytest.raises(InvalidSettingError, match="switch it on"):
        compare(engine, reference, POSE, "openpose", settings=CompareSettings(**s, methods=(PROMPT_FREE,), balance=0.5))
