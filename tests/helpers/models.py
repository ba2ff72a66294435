"""Tiny model files and registries the tests write, offline: a tiny IP-Adapter and the tiny profile
with extra sections, the few-step LoRA checkpoints.yaml, two ControlNets on the example maps,
random-initialised detector weights in the real files' layouts, and a UNet that runs out of memory."""

from __future__ import annotations

import functools
import os
import types
import warnings

import torch
import yaml

from prompt_free import tiny
from prompt_free.images import image_to_tensor, load_image
from prompt_free.registry import DEFAULT_CHECKPOINTS, Registry
from prompt_free.sampling import ControlInput
from tests.helpers.lora_files import lora_layers, tiny_data_with_loras, write_kohya


# ----------------------------------------------------------------------------- a tiny IP-Adapter, offline
IP_NAME = "Tiny IP-Adapter"


def write_tiny_ip_adapter(folder, seed=0):
    """A plain IP-Adapter for the tiny UNet (4 image tokens of width 64) with random weights,
    plus a tiny CLIP image encoder beside it (``image_encoder/``, diffusers' layout)."""
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            image_size=32, patch_size=8, projection_dim=16))
    enc.save_pretrained(folder / "image_encoder")
    unet = tiny.tiny_unet(1)
    cross = unet.config.cross_attention_dim
    sd = {
        "image_proj.proj.weight": torch.randn(4 * cross, 16, generator=g) * 0.2,
        "image_proj.proj.bias": torch.zeros(4 * cross),
        "image_proj.norm.weight": torch.ones(cross),
        "image_proj.norm.bias": torch.zeros(cross),
    }
    key_id = 1  # diffusers' numbering: 1, 3, 5 ... over the cross-attention processors in order
    widths = unet.config.block_out_channels
    for name in unet.attn_processors:
        if not name.endswith("attn2.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = widths[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(widths))[int(name.split(".")[1])]
        else:
            hidden = widths[int(name.split(".")[1])]
        sd[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.2
        sd[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross, generator=g) * 0.2
        key_id += 2
    path = folder / "ip-adapter_tiny.safetensors"
    save_file(sd, str(path))
    return path


def tiny_profile_with(**sections):
    data = yaml.safe_load(DEFAULT_CHECKPOINTS.read_text())["profiles"]["tiny"]
    data.update(sections)
    return Registry.from_dict(data, profile="tiny-ip")


# ----------------------------------------------------------------------------- few-step LoRAs
def write_few_step_checkpoints(tmp_path):
    """The tiny profile with two real LoRA files (kohya keys): 'Fast' carries sampler settings
    (LCM, 3 steps, guidance 1), 'Faster' other ones (TCD, 2 steps), 'Style' none."""
    files = {name: write_kohya(tmp_path / f"{name}.safetensors", lora_layers(seed, std=0.05))
             for name, seed in (("Fast", 1), ("Faster", 2), ("Style", 3))}
    data = tiny_data_with_loras(files)
    data["loras"]["Fast"].update(scheduler="LCM", steps=3, guidance=1.0, validated=False)
    data["loras"]["Faster"].update(scheduler="TCD", steps=2)
    path = tmp_path / "checkpoints.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"tiny": data}}, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- two ControlNets
MAPS = ("assets/examples/pose_standing.png", "assets/examples/depth_spheres.png")


def two_controlnets(engine):
    """An openpose and a depth ControlNet on the example maps at 128 x 128, with their own scales and windows."""
    maps = [image_to_tensor(load_image(p).resize((128, 128))) for p in MAPS]
    return [ControlInput(engine.controlnet("openpose"), maps[0], 0.8, 0.0, 1.0),
            ControlInput(engine.controlnet("depth"), maps[1], 1.3, 0.2, 0.8)]


# ----------------------------------------------------------------------------- fake detector weights
def _quiet_build(fn):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            return fn()


def _net_body():
    from controlnet_aux.open_pose.model import bodypose_model

    return bodypose_model()


def _net_hand():
    from controlnet_aux.open_pose.model import handpose_model

    return handpose_model()


def _net_face():
    from controlnet_aux.open_pose.face import FaceNet

    return FaceNet()


def net_hed():
    from controlnet_aux.hed import ControlNetHED_Apache2

    return ControlNetHED_Apache2()


def _net_pidi():
    from controlnet_aux.pidi.model import pidinet

    return pidinet()


def _net_mlsd():
    from controlnet_aux.mlsd.models.mbv2_mlsd_large import MobileV2_MLSD_Large

    return MobileV2_MLSD_Large()


def _net_midas():
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    return DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True)


def _net_normalbae():
    from controlnet_aux.normalbae.nets.NNET import NNET

    return NNET(types.SimpleNamespace(mode="client", architecture="BN", pretrained="scannet",
                                      sampling_ratio=0.4, importance_ratio=0.7))


def _net_lineart():
    from controlnet_aux.lineart import Generator

    return Generator(3, 1, 3)


def _net_anime():
    from controlnet_aux.lineart_anime import UnetGenerator

    norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    return UnetGenerator(3, 1, 8, 64, norm_layer=norm, use_dropout=False)


def _net_zoe():
    from controlnet_aux.zoe.zoedepth.models.zoedepth.zoedepth_v1 import ZoeDepth
    from controlnet_aux.zoe.zoedepth.utils.config import get_config

    return ZoeDepth.build_from_config(get_config("zoedepth", "infer"))


def _net_sam():
    from controlnet_aux.segment_anything.build_sam import build_sam_vit_t

    return build_sam_vit_t()


def _drop_first(sd):  # OpenPose body/hand files: "conv1_1.weight" for "model0.conv1_1.weight"
    return {k.split(".", 1)[1]: v for k, v in sd.items()}


def _module_prefix(sd):
    return {"module." + k: v for k, v in sd.items()}

FAKE_FILES = {
    "body_pose_model.pth": (_net_body, _drop_first),
    "hand_pose_model.pth": (_net_hand, _drop_first),
    "facenet.pth": (_net_face, lambda sd: sd),
    "ControlNetHED.pth": (net_hed, lambda sd: sd),
    "table5_pidinet.pth": (_net_pidi, lambda sd: {"epoch": 13, "state_dict": _module_prefix(sd)}),
    "mlsd_large_512_fp32.pth": (_net_mlsd, lambda sd: sd),
    "dpt_hybrid-midas-501f0c75.pt": (_net_midas, lambda sd: sd),
    "scannet.pt": (_net_normalbae, lambda sd: {"model": _module_prefix(sd)}),
    "sk_model.pth": (_net_lineart, lambda sd: sd),
    "sk_model2.pth": (_net_lineart, lambda sd: sd),
    "netG.pth": (_net_anime, _module_prefix),
    "ZoeD_M12_N.pt": (_net_zoe, lambda sd: {"model": sd}),
    "mobile_sam.pt": (_net_sam, lambda sd: sd),
}


def write_fake(folder, filename, seed=0):
    """Save a random-initialised network's weights as ``folder/filename``; returns its state dict."""
    factory, layout = FAKE_FILES[filename]
    torch.manual_seed(seed)
    sd = _quiet_build(factory).state_dict()
    torch.save(layout(sd), os.path.join(folder, filename))
    return sd


# ----------------------------------------------------------------------------- a UNet that runs out of memory
class FailingUNet:
    """Makes the UNet's forward raise an out-of-memory error the first ``times`` calls."""

    def __init__(self, unet, times: int):
        self.left = times
        self.handle = unet.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        if self.left > 0:
            self.left -= 1
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def remove(self):
        self.handle.remove()
