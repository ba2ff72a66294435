"""The two-pipeline recipe gives our pictures: diffusers' own pipelines, loaded from the folders
``prompt-free export`` writes, with ``PromptFreePriorPipeline``'s embeddings, against
``prompt-free generate`` run in-process on the tiny profile (same seed, steps, guidance, size).

The recipe (docs/diffusers.md): ``generator=torch.Generator().manual_seed(S)`` (a list
``[manual_seed(S + i)]`` for several images, as our image i has seed S + i): diffusers'
``prepare_latents`` then draws the same initial noise as ``sampling.initial_noise`` (CPU, per image,
DDIM's init sigma 1), and the DDIM steps, guidance and VAE decode are the same calls. Only the last
conversion to 8 bits differs: diffusers rounds, we truncate, so its PIL pictures are within 1/255;
``output_type="pt"`` truncated as we do gives our pixels (bit for bit for one image in one process;
a batch of two moved 2 of 12288 values by 1/255)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (ControlNetModel, StableDiffusionControlNetPipeline, StableDiffusionImg2ImgPipeline,
                       StableDiffusionInpaintPipeline, StableDiffusionPipeline)
from PIL import Image, ImageDraw

from prompt_free import PromptFreePriorPipeline
from tests.helpers.cli import pixels, run
from tests.helpers.diffusers_export import small_references, SIZE, STEPS, base_pipeline, export_tiny

pytestmark = pytest.mark.timeout(600)
SEED = 9
GENERATE = ["--profile", "tiny", "--steps", STEPS, "--size", f"{SIZE}x{SIZE}", "--seed", SEED]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """One export per SeeCoder (the base model and the canny ControlNet in both)."""
    root = tmp_path_factory.mktemp("exports")
    return {name: export_tiny(root / name, "--seecoder", name, "--controlnet", "canny")
            for name in ("SeeCoder", "SeeCoder-Anime")}


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    """{"A": coffee, "B": chelsea}, small (the names in ``CASES``)."""
    return dict(zip("AB", small_references(tmp_path_factory.mktemp("refs"))))


@pytest.fixture(scope="module")
def edges(tmp_path_factory):
    """A canny-like map at the output size (white lines on black)."""
    path = tmp_path_factory.mktemp("maps") / "edges.png"
    img = Image.new("RGB", (SIZE, SIZE))
    draw = ImageDraw.Draw(img)
    draw.rectangle([10, 12, 50, 40], outline="white")
    draw.line([0, 60, 63, 5], fill="white")
    img.save(path)
    return path


def ours(tmp_path, capsys, *argv):
    code, _, err = run(["generate", *argv, *GENERATE, "--out", tmp_path / "ours"], capsys)
    assert code == 0, err
    return tmp_path / "ours"


def assert_same_picture(theirs: torch.Tensor, our_files) -> None:
    """``theirs``: diffusers' ``output_type="pt"`` batch; ``our_files``: our PNGs in its order."""
    as_ours = theirs.clamp(0, 1).mul(255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # truncation, as we do
    rounded = np.round(theirs.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)  # its PIL output
    for i, path in enumerate(our_files):
        mine = pixels(path).astype(int)
        assert mine.shape == (SIZE, SIZE, 3)
        assert np.abs(mine - rounded[i].astype(int)).max() <= 1, "diffusers' picture is not within 1/255 of ours"
        same_conversion = np.abs(mine - as_ours[i].astype(int))
        # float rounding of the batched UNet (our contexts are expanded views, diffusers' repeated
        # copies) moves a few values across a truncation step: measured 0 of 12288 for one image,
        # 2 of 12288 in a batch of two
        assert same_conversion.max() <= 1 and (same_conversion > 0).mean() <= 1e-3, "not our pixels"


# case: (generate's options, the prior's arguments, images, our files); "A" / "B" name the references
CASES = {
    "one reference, two images": (["--reference", "A", "--num-images", 2], dict(image="A"), 2,
                                  ["coffee-s9.png", "coffee-s10.png"]),
    "reference strength": (["--reference", "A", "--reference-strength", 0.6], dict(image="A", reference_strength=0.6), 1,
                           ["coffee-s9.png"]),
    "Multi-Reference average": (["--reference", "A", "--reference", "B", "--weight", 1, "--weight", 0.5],
                                dict(image=["A", "B"], reference_weights=[1, 0.5]), 1, ["coffee-multi-s9.png"]),
    "SeeCoder-Anime": (["--reference", "A", "--seecoder", "SeeCoder-Anime", "--base-model", "Tiny SD"], dict(image="A"),
                       1, ["coffee-s9.png"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_stable_diffusion_pipeline_gives_our_image_variation(case, folders, refs, tmp_path, capsys):
    argv, prior_call, n, names = CASES[case]
    argv = [refs.get(a, a) if isinstance(a, str) else a for a in argv]
    image = prior_call["image"]
    prior_call = dict(prior_call, image=[refs[i] for i in image] if isinstance(image, list) else refs[image])
    folder = folders["SeeCoder-Anime" if "--seecoder" in argv else "SeeCoder"]
    out = ours(tmp_path, capsys, *argv)
    embeds = PromptFreePriorPipeline.from_pretrained(folder / "prior")(**prior_call)
    pipe = base_pipeline(StableDiffusionPipeline, folder)
    theirs = pipe(**embeds, guidance_scale=2.0, num_inference_steps=STEPS, height=SIZE, width=SIZE,
                  num_images_per_prompt=n, generator=[torch.Generator().manual_seed(SEED + i) for i in range(n)],
                  output_type="pt").images
    assert_same_picture(theirs, [out / name for name in names])


def test_controlnet_pipeline_gives_our_reference_and_controlnet(folders, refs, edges, tmp_path, capsys):
    A = refs["A"]
    out = ours(tmp_path, capsys, "--reference", A, "--control", f"canny={edges}")
    folder = folders["SeeCoder"]
    controlnet = ControlNetModel.from_pretrained(folder / "controlnets" / "canny")
    pipe = base_pipeline(StableDiffusionControlNetPipeline, folder, controlnet=controlnet)
    embeds = PromptFreePriorPipeline.from_pretrained(folder / "prior")(A)
    theirs = pipe(**embeds, image=Image.open(edges), guidance_scale=2.0, num_inference_steps=STEPS, height=SIZE,
                  width=SIZE, generator=torch.Generator().manual_seed(SEED), output_type="pt").images
    assert_same_picture(theirs, [out / "coffee-s9.png"])


def test_img2img_and_inpainting_pipelines_run_with_the_prior(folders, refs, tmp_path):
    A, B = refs["A"], refs["B"]
    folder = folders["SeeCoder"]
    embeds = PromptFreePriorPipeline.from_pretrained(folder / "prior")(B)
    start = Image.open(A).convert("RGB").resize((SIZE, SIZE))
    mask = Image.new("L", (SIZE, SIZE))
    ImageDraw.Draw(mask).rectangle([16, 16, 48, 48], fill=255)
    export_tiny(tmp_path / "inpainting", "--base-model", "Tiny SD Inpainting")
    runs = [
        (base_pipeline(StableDiffusionImg2ImgPipeline, folder), dict(image=start, strength=0.7)),
        (base_pipeline(StableDiffusionInpaintPipeline, tmp_path / "inpainting"), dict(image=start, mask_image=mask)),
        (base_pipeline(StableDiffusionInpaintPipeline, folder), dict(image=start, mask_image=mask)),  # a 4-channel UNet
    ]
    for pipe, inputs in runs:
        got = pipe(**embeds, **inputs, guidance_scale=2.0, num_inference_steps=STEPS, height=SIZE, width=SIZE,
                   generator=torch.Generator().manual_seed(SEED), output_type="np").images
        assert got.shape == (1, SIZE, SIZE, 3) and np.isfinite(got).all()
    assert base_pipeline(StableDiffusionInpaintPipeline, tmp_path / "inpainting").unet.config.in_channels == 9
