"""Checkpoint layouts (spec section d): every supported layout of the same weights loads to the
same diffusers model; full-size official key lists map onto the SD 1.5 models; wrong files
give clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers.shared import shared_file

from prompt_free import CheckpointError, ModelUnavailableError, load_controlnet, load_unet
from prompt_free.formats import (
    MODEL_KINDS,
    SD15_CONTROLNET_CONFIG,
    SD15_UNET_CONFIG,
    SD15_VAE_CONFIG,
    _to_diffusers,
    convert_controlnet_state_dict,
    convert_unet_state_dict,
    convert_vae_state_dict,
    identify_checkpoint,
    ldm_to_official_unet,
    load_single_file_pipeline_parts,
    load_vae,
    official_to_ldm_unet,
)
from prompt_free.weights import read_state_dict


# ----------------------------------------------------------------------------- fixtures
def _e2e(name: str) -> Path:
    return shared_file("fixtures", "e2e_parity", name)


def _keys(name: str):
    return json.loads(shared_file("spec", "keys", name).read_text())


@pytest.fixture(scope="module")
def configs():
    return json.loads(_e2e("config.json").read_text())


@pytest.fixture(scope="module")
def unet_cfg(configs):
    return configs["diffusers_unet_config"]


@pytest.fixture(scope="module")
def cn_cfg(configs):
    return configs["diffusers_controlnet_config"]


@pytest.fixture(scope="module")
def official_unet_sd():
    return read_state_dict(_e2e("unet_pfd.safetensors"))


@pytest.fixture(scope="module")
def reference_unet(unet_cfg):
    return load_unet(_e2e("unet_pfd.safetensors"), unet_cfg)


@pytest.fixture(scope="module")
def reference_controlnet(cn_cfg):
    return load_controlnet(_e2e("controlnet_slimmed.safetensors"), cn_cfg)


def assert_same_weights(model, reference):
    a, b = model.state_dict(), reference.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def _meta(shapes):
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def _empty(cls, config):
    from accelerate import init_empty_weights

    with init_empty_weights():
        return cls.from_config(config)


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


class NotATensor:
    pass


# ----------------------------------------------------------------------------- UNet layouts
def test_official_unet_loads_as_diffusers(reference_unet, official_unet_sd):
    from diffusers import UNet2DConditionModel

    assert isinstance(reference_unet, UNet2DConditionModel) and not reference_unet.training
    assert len(official_unet_sd) == 686 and identify_checkpoint(official_unet_sd) == "pfd_unet"
    assert len(reference_unet.state_dict()) == 686
    # values are the file's (fp16 -> fp32 is exact)
    w = official_unet_sd["diffuser.image.data_blocks.0.0.weight"]
    assert torch.equal(reference_unet.conv_in.weight, w.float())


def test_unet_dtype_kept_when_asked(unet_cfg):
    unet = load_unet(_e2e("unet_pfd.safetensors"), unet_cfg, dtype=torch.float16)
    assert {p.dtype for p in unet.parameters()} == {torch.float16}


def test_sd_single_file_and_pth_load_identically(tmp_path, official_unet_sd, unet_cfg, reference_unet):
    ldm = official_to_ldm_unet(official_unet_sd)
    assert all(k.startswith("model.diffusion_model.") for k in ldm) and len(ldm) == 686
    single = dict(ldm)
    single["first_stage_model.encoder.conv_in.weight"] = torch.zeros(8, 3, 3, 3)
    single["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.ones(8)
    single["alphas_cumprod"] = torch.linspace(1, 0, 10)
    f = tmp_path / "sd15_like.safetensors"
    save_file(single, str(f))
    assert_same_weights(load_unet(f, unet_cfg), reference_unet)

    pth = tmp_path / "sd15_like.ckpt"
    torch.save({"state_dict": single}, pth)
    assert_same_weights(load_unet(pth, unet_cfg), reference_unet)

    official_pth = tmp_path / "diffuser.pth"
    torch.save(official_unet_sd, official_pth)
    assert_same_weights(load_unet(official_pth, unet_cfg), reference_unet)


def test_text_context_spelling_loads_identically(tmp_path, official_unet_sd, unet_cfg, reference_unet):
    renamed = {k.replace("diffuser.image.context_blocks.", "diffuser.text.context_blocks."): v for k, v in official_unet_sd.items()}
    assert sum(k.startswith("diffuser.text.context_blocks.") for k in renamed) == 16 * 26
    f = tmp_path / "text_spelling.safetensors"
    save_file(renamed, str(f))
    assert_same_weights(load_unet(f, unet_cfg), reference_unet)
    # the converter's reverse direction writes that spelling too
    back = ldm_to_official_unet(official_to_ldm_unet(official_unet_sd), text_context=True)
    assert back.keys() == renamed.keys()


def test_diffusers_folders_load_identically(tmp_path, reference_unet):
    reference_unet.save_pretrained(tmp_path / "unet_folder")
    assert_same_weights(load_unet(tmp_path / "unet_folder"), reference_unet)
    reference_unet.save_pretrained(tmp_path / "pipeline" / "unet")
    assert_same_weights(load_unet(tmp_path / "pipeline"), reference_unet)
    # a bare diffusers state dict file
    f = tmp_path / "diffusers_sd.safetensors"
    save_file({k: v.contiguous() for k, v in reference_unet.state_dict().items()}, str(f))
    assert_same_weights(load_unet(f, dict(reference_unet.config)), reference_unet)


# ----------------------------------------------------------------------------- ControlNet layouts
def test_slimmed_and_webui_controlnets_load_identically(tmp_path, cn_cfg, reference_controlnet):
    from diffusers import ControlNetModel

    assert isinstance(reference_controlnet, ControlNetModel) and not reference_controlnet.training
    slimmed = read_state_dict(_e2e("controlnet_slimmed.safetensors"))
    assert len(slimmed) == 340 and len(reference_controlnet.state_dict()) == 340
    webui = {"control_model." + k: v for k, v in slimmed.items()}
    f = tmp_path / "control_webui.safetensors"
    save_file(webui, str(f))
    assert_same_weights(load_controlnet(f, cn_cfg), reference_controlnet)
    pth = tmp_path / "control_webui.pth"
    torch.save(webui, pth)
    assert_same_weights(load_controlnet(pth, cn_cfg), reference_controlnet)
    reference_controlnet.save_pretrained(tmp_path / "cn_folder")
    assert_same_weights(load_controlnet(tmp_path / "cn_folder"), reference_controlnet)


# ----------------------------------------------------------------------------- full-size layouts
def test_full_size_official_unet_keys_map_onto_sd15_unet():
    from diffusers import UNet2DConditionModel

    official = _keys("pfd_diffuser_keys.json")
    assert len(official) == 686
    converted = convert_unet_state_dict(_meta(official))  # default config: SD 1.5
    assert _shapes_of(converted) == _shapes(_empty(UNet2DConditionModel, SD15_UNET_CONFIG))
    # the table is one-to-one: back to the same official names, and the text spelling works
    meta = _meta(official)
    assert ldm_to_official_unet(official_to_ldm_unet(meta)).keys() == official.keys()
    text = {k.replace("diffuser.image.context_blocks.", "diffuser.text.context_blocks."): v for k, v in meta.items()}
    assert _shapes_of(convert_unet_state_dict(text)) == _shapes_of(converted)


def test_full_size_slimmed_controlnet_keys_map_onto_sd15_controlnet():
    from diffusers import ControlNetModel

    slimmed = _keys("pfd_controlnet_slimmed_keys.json")
    assert len(slimmed) == 340
    expected = _shapes(_empty(ControlNetModel, SD15_CONTROLNET_CONFIG))
    assert _shapes_of(convert_controlnet_state_dict(_meta(slimmed))) == expected
    webui = _meta({"control_model." + k: v for k, v in slimmed.items()})
    assert _shapes_of(convert_controlnet_state_dict(webui)) == expected


def test_full_size_vae_keys_map_onto_sd_vae():
    from diffusers import AutoencoderKL

    keys = _keys("pfd_vae_keys.json")  # vae.image.* inside the official net
    expected = _shapes(_empty(AutoencoderKL, SD15_VAE_CONFIG))
    assert _shapes_of(convert_vae_state_dict(_meta(keys))) == expected
    plain = {k[len("vae.image."):]: v for k, v in keys.items()}  # the .pth file's own keys
    assert _shapes_of(convert_vae_state_dict(_meta(plain))) == expected


def _shapes_of(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


# ----------------------------------------------------------------------------- VAE files
SMALL_VAE_CONFIG = dict(SD15_VAE_CONFIG, block_out_channels=(8, 16, 32, 32), norm_num_groups=8, sample_size=64)


@pytest.fixture(scope="module")
def small_vae_and_ldm():
    """A small SD-structured diffusers VAE and the same weights under ldm names. The ldm names
    come from the full-size key list, paired with diffusers names through diffusers' own
    converter (no hand-written renaming)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**SMALL_VAE_CONFIG).eval()
    full = {k[len("vae.image."):]: v for k, v in _keys("pfd_vae_keys.json").items()}
    meta = _meta(full)
    converted, _ = _to_diffusers(MODEL_KINDS["vae"], meta, SD15_VAE_CONFIG)
    by_id = {id(v): k for k, v in converted.items()}
    by_base = {id(v._base): k for k, v in converted.items() if v._base is not None}
    small = vae.state_dict()
    ldm = {}
    for ldm_key, m in meta.items():
        dkey = by_id.get(id(m)) or by_base[id(m)]
        t = small[dkey]
        ldm[ldm_key] = t.reshape(*t.shape, *([1] * (m.ndim - t.ndim))).clone()
    return vae, ldm


def test_ldm_vae_file_loads(tmp_path, small_vae_and_ldm):
    vae, ldm = small_vae_and_ldm
    f = tmp_path / "autokl.pth"
    torch.save(ldm, f)
    assert_same_weights(load_vae(f, SMALL_VAE_CONFIG), vae)
    g = tmp_path / "net_vae.safetensors"
    save_file({"vae.image." + k: v for k, v in ldm.items()}, str(g))
    assert_same_weights(load_vae(g, SMALL_VAE_CONFIG), vae)
    h = tmp_path / "vae_extra.safetensors"
    save_file(dict(ldm, **{"encoder.bogus.weight": torch.zeros(2)}), str(h))
    with pytest.raises(CheckpointError, match="unexpected keys: encoder.bogus.weight"):
        load_vae(h, SMALL_VAE_CONFIG)


def test_single_file_pipeline_parts(tmp_path, small_vae_and_ldm, official_unet_sd, unet_cfg, reference_unet):
    vae, ldm_vae = small_vae_and_ldm
    sd = dict(official_to_ldm_unet(official_unet_sd))
    sd.update({"first_stage_model." + k: v for k, v in ldm_vae.items()})
    sd["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.ones(8)
    f = tmp_path / "model.safetensors"
    save_file(sd, str(f))
    unet, vae2 = load_single_file_pipeline_parts(f, unet_config=unet_cfg, vae_config=SMALL_VAE_CONFIG)
    assert_same_weights(unet, reference_unet)
    assert_same_weights(vae2, vae)
    assert_same_weights(load_vae(f, SMALL_VAE_CONFIG), vae)


# ----------------------------------------------------------------------------- errors
def test_seecoder_file_given_as_unet():
    path = shared_file("fixtures", "seecoder_parity", "seecoder_weights.safetensors")
    with pytest.raises(CheckpointError, match="SeeCoder") as e:
        load_unet(path)
    assert str(path) in str(e.value)
    with pytest.raises(CheckpointError, match="SeeCoder"):
        load_controlnet(path)


def test_controlnet_and_unet_files_swapped(unet_cfg, cn_cfg):
    with pytest.raises(CheckpointError, match="ControlNet.*not a UNet"):
        load_unet(_e2e("controlnet_slimmed.safetensors"), unet_cfg)
    with pytest.raises(CheckpointError, match="UNet.*not a ControlNet"):
        load_controlnet(_e2e("unet_pfd.safetensors"), cn_cfg)


def test_missing_and_unexpected_keys(tmp_path, official_unet_sd, unet_cfg):
    missing = {k: v for k, v in official_unet_sd.items() if not k.startswith("diffuser.image.data_blocks.29.")}
    f = tmp_path / "missing.safetensors"
    save_file(missing, str(f))
    with pytest.raises(CheckpointError, match="missing keys: conv_norm_out.bias") as e:
        load_unet(f, unet_cfg)
    assert str(f) in str(e.value)

    extra = dict(official_unet_sd, **{"diffuser.image.data_blocks.30.0.weight": torch.zeros(2)})
    g = tmp_path / "extra.safetensors"
    save_file(extra, str(g))
    with pytest.raises(CheckpointError, match="unexpected keys: diffuser.image.data_blocks.30.0.weight"):
        load_unet(g, unet_cfg)

    foreign = dict(official_unet_sd, **{"first_stage_model.encoder.conv_in.weight": torch.zeros(2)})
    h = tmp_path / "foreign.safetensors"
    save_file(foreign, str(h))
    with pytest.raises(CheckpointError, match="first_stage_model.encoder.conv_in.weight"):
        load_unet(h, unet_cfg)

    ldm = dict(official_to_ldm_unet(official_unet_sd), **{"model.diffusion_model.extra_block.0.weight": torch.zeros(2)})
    i = tmp_path / "ldm_extra.safetensors"
    save_file(ldm, str(i))
    with pytest.raises(CheckpointError, match="unexpected keys: model.diffusion_model.extra_block.0.weight"):
        load_unet(i, unet_cfg)

    slimmed = read_state_dict(_e2e("controlnet_slimmed.safetensors"))
    slimmed.pop("zero_convs.3.0.weight")
    j = tmp_path / "cn_missing.safetensors"
    save_file(slimmed, str(j))
    with pytest.raises(CheckpointError, match="missing keys: controlnet_down_blocks.3.weight"):
        load_controlnet(j)


def test_config_width_mismatch_names_keys_and_shapes():
    path = _e2e("unet_pfd.safetensors")
    with pytest.raises(CheckpointError) as e:
        load_unet(path)  # default SD 1.5 config, 32-wide file
    msg = str(e.value)
    assert str(path) in msg and "wrong shapes" in msg
    assert "conv_in.weight (32, 4, 3, 3) (expected (320, 4, 3, 3))" in msg
    with pytest.raises(CheckpointError, match=r"wrong shapes: .*\(expected \(320"):
        load_controlnet(_e2e("controlnet_slimmed.safetensors"))


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_unet(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_controlnet(str(tmp_path / "nope.pth"))
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(bytes(range(256)) * 16)
    with pytest.raises(CheckpointError, match="garbage.safetensors"):
        load_unet(garbage)
    garbage_ckpt = tmp_path / "garbage.ckpt"
    garbage_ckpt.write_bytes(b"\x80\x02not really a pickle" * 10)
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        load_unet(garbage_ckpt)
    evil = tmp_path / "object.pth"
    torch.save({"w": torch.zeros(2), "obj": NotATensor()}, evil)
    with pytest.raises(CheckpointError, match="other than tensors"):
        load_unet(evil)
    strings = tmp_path / "strings.pth"
    torch.save({"w": torch.zeros(2), "note": "hello"}, strings)
    with pytest.raises(CheckpointError, match="dict of tensors"):
        load_controlnet(strings)
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    with pytest.raises(CheckpointError, match="not a diffusers model folder"):
        load_unet(empty_dir)


@pytest.mark.filterwarnings("ignore:.*local_dir_use_symlinks.*")
def test_hub_repo_unavailable_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="no-such-user/no-such-unet"):
        load_unet("no-such-user/no-such-unet")
    with pytest.raises(ModelUnavailableError, match="no-such-user/no-such-controlnet"):
        load_controlnet("no-such-user/no-such-controlnet")
