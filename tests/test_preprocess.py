"""prompt_free.preprocess: every detector run for real, offline, on CPU.

Weighted detectors get random-initialised networks built from controlnet_aux's own model
classes, saved under the hub file names and in the layout the real files have (e.g. OpenPose
body/hand keys without their first component, PiDiNet under "state_dict" with "module."
prefixes, NormalBae and ZoeDepth under "model"), then loaded by ``preprocess`` from a tmp folder.
"""

from __future__ import annotations

import functools
import os
import threading
import types
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free import preprocess as P
from prompt_free.errors import (
    ConfigError,
    InputImageError,
    InvalidSettingError,
    ModelUnavailableError,
    PromptFreeError,
)

W, H = 128, 96  # small test image (not a multiple of 64 on the short side: detectors resize)

pytestmark = pytest.mark.filterwarnings("ignore")

SLOW = os.environ.get("PFD_SLOW_TESTS") == "1"

EXPECTED_FILES = {
    "canny": (),
    "openpose": ("body_pose_model.pth",),
    "openpose_hand": ("body_pose_model.pth", "hand_pose_model.pth"),
    "openpose_face": ("body_pose_model.pth", "facenet.pth"),
    "openpose_full": ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"),
    "depth": ("dpt_hybrid-midas-501f0c75.pt",),
    "depth_zoe": ("ZoeD_M12_N.pt",),
    "normal": ("dpt_hybrid-midas-501f0c75.pt",),
    "normal_bae": ("scannet.pt",),
    "hed": ("ControlNetHED.pth",),
    "softedge": ("ControlNetHED.pth",),
    "softedge_pidi": ("table5_pidinet.pth",),
    "scribble": ("table5_pidinet.pth",),
    "scribble_hed": ("ControlNetHED.pth",),
    "mlsd": ("mlsd_large_512_fp32.pth",),
    "lineart": ("sk_model.pth",),
    "lineart_coarse": ("sk_model2.pth",),
    "lineart_anime": ("netG.pth",),
    "seg": ("mobile_sam.pt",),
    "shuffle": (),
    "none": (),
}


# ----------------------------------------------------------------------------- fake weights


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


def _net_hed():
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


# hub file name -> (network factory, state dict -> object saved in the real file's layout)
FAKE_FILES = {
    "body_pose_model.pth": (_net_body, _drop_first),
    "hand_pose_model.pth": (_net_hand, _drop_first),
    "facenet.pth": (_net_face, lambda sd: sd),
    "ControlNetHED.pth": (_net_hed, lambda sd: sd),
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


class FakeAnnotators:
    """A folder that gets each fake weight file written on first request."""

    def __init__(self, path):
        self.path = str(path)
        self.saved = {}
        self._lock = threading.Lock()

    def need(self, *filenames):
        with self._lock:
            for f in filenames:
                if f not in self.saved:
                    self.saved[f] = write_fake(self.path, f)
        return self.path


@pytest.fixture(scope="module")
def annotators(tmp_path_factory):
    return FakeAnnotators(tmp_path_factory.mktemp("annotators"))


@pytest.fixture(autouse=True)
def _no_env_folder(monkeypatch):
    monkeypatch.delenv(P.ENV_ANNOTATOR_DIR, raising=False)


@pytest.fixture
def offline_empty_cache(monkeypatch, tmp_path):
    """The hub offline and an empty HF cache; a download attempt fails the test."""
    import huggingface_hub.constants as C

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache))

    def no_download(wf):
        raise AssertionError(f"tried to download {wf.filename} while offline")

    monkeypatch.setattr(P, "_hub_download", no_download)
    return cache


def photo(w=W, h=H, seed=0):
    rng = np.random.default_rng(seed)
    a = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    a[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = (230, 40, 40)
    return Image.fromarray(a)


def assert_map(img, size=(W, H)):
    assert isinstance(img, Image.Image)
    assert img.mode == "RGB"
    assert img.size == size
    a = np.asarray(img)
    assert a.dtype == np.uint8 and a.shape == (size[1], size[0], 3)


# ----------------------------------------------------------------------------- registry


def test_registry_names_files_and_pairings():
    assert {n: s.files for n, s in P.PREPROCESSORS.items()} == EXPECTED_FILES
    for name, spec in P.PREPROCESSORS.items():
        assert spec.name == name and spec.label
        assert spec.needs_weights == bool(spec.files)
        assert len(spec.repos) == len(spec.files)
        assert spec.map_kind
    assert P.PREPROCESSORS["seg"].repos == ("dhkim2810/MobileSAM",)
    assert set(P.PREPROCESSORS["openpose_full"].repos) == {"lllyasviel/Annotators"}
    # every auto choice of the official ControlNet dropdown is a known preprocessor
    assert all(v in P.PREPROCESSORS for v in P.AUTO_PREPROCESSOR.values())
    assert P.PREPROCESSORS["canny"].controlnet == "canny"
    assert P.PREPROCESSORS["scribble"].controlnet == "scribble"
    assert P.PREPROCESSORS["none"].controlnet is None
    assert P.PREPROCESSORS["canny"].options == {"low_threshold": 100, "high_threshold": 200}
    assert P.resolve_name("openpose_withfacehand") == "openpose_full"
    assert P.resolve_name("openpose_withface") == "openpose_face"
    assert P.resolve_name(" Canny ") == "canny"
    with pytest.raises(ConfigError, match="unknown preprocessor 'sobel'.*canny"):
        P.get_detector("sobel")
    with pytest.raises(ConfigError):
        P.available("")


def test_no_gradio_or_ui_import():
    src = open(P.__file__, encoding="utf-8").read()
    assert "gradio" not in src


def test_every_torch_load_is_weights_only(tmp_path, monkeypatch):
    write_fake(str(tmp_path), "sk_model.pth")
    write_fake(str(tmp_path), "body_pose_model.pth")
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    P.get_detector("lineart", tmp_path)
    P.get_detector("openpose", tmp_path)
    assert calls and all(c is True for c in calls)


# ----------------------------------------------------------------------------- weight-free


def test_canny_edges_exactly_on_the_rectangle():
    a = np.zeros((H, W, 3), np.uint8)
    a[24:72, 32:96] = 255  # rows 24..71, cols 32..95
    out = P.preprocess("canny", Image.fromarray(a))
    assert_map(out)
    m = np.asarray(out)
    assert set(np.unique(m)) <= {0, 255}
    assert (m[..., 0] == m[..., 1]).all() and (m[..., 0] == m[..., 2]).all()
    e = m[..., 0] > 0
    # cv2.Canny marks the lower-index pixel of each step: rows 23 / 71, columns 31 / 95
    for x in range(34, 94):
        assert np.nonzero(e[:, x])[0].tolist() == [23, 71], x
    for y in range(26, 70):
        assert np.nonzero(e[y, :])[0].tolist() == [31, 95], y
    ys, xs = np.nonzero(e)
    assert ys.min() >= 23 and ys.max() <= 71 and xs.min() >= 31 and xs.max() <= 95
    inside = (ys > 24) & (ys < 70) & (xs > 32) & (xs < 94)
    assert not inside.any()  # nothing in the flat interior
    # thresholds are options: above the step's gradient nothing is found
    none = np.asarray(P.preprocess("canny", Image.fromarray(a), low_threshold=5000, high_threshold=6000))
    assert none.max() == 0


def test_canny_on_a_flat_image_is_empty_and_keeps_size():
    out = P.preprocess("canny", Image.new("RGB", (77, 33), (10, 200, 30)))
    assert_map(out, (77, 33))
    assert np.asarray(out).max() == 0


def test_shuffle_and_none():
    img = photo()
    out = P.preprocess("shuffle", img, resolution=128)
    assert_map(out)
    assert np.asarray(out).std() > 0
    out = P.preprocess("none", img)
    assert_map(out)
    assert np.array_equal(np.asarray(out), np.asarray(img))
    for name in ("canny", "shuffle", "none"):
        assert P.available(name) and not P.PREPROCESSORS[name].needs_weights


# ----------------------------------------------------------------------------- image modes


def test_odd_modes_to_rgb():
    rgba = Image.new("RGBA", (8, 6), (255, 0, 0, 0))  # fully transparent red -> white
    assert np.asarray(P.to_rgb(rgba)).tolist() == np.full((6, 8, 3), 255).tolist()
    half = Image.new("RGBA", (8, 6), (0, 0, 0, 128))  # half-transparent black on white
    assert abs(int(np.asarray(P.to_rgb(half))[0, 0, 0]) - 127) <= 1
    la = Image.new("LA", (8, 6), (0, 0))
    assert np.asarray(P.to_rgb(la)).min() == 255
    i16 = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert i16.mode.startswith("I;16")
    assert np.asarray(P.to_rgb(i16))[0, :, 0].tolist() == [0, 128, 255]
    i32 = Image.fromarray(np.array([[0, 65535]], dtype=np.int32))
    assert i32.mode == "I"
    assert np.asarray(P.to_rgb(i32))[0, :, 0].tolist() == [0, 255]
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert f.mode == "F"
    assert np.asarray(P.to_rgb(f))[0, :, 0].tolist() == [0, 128, 255]
    cmyk = Image.new("CMYK", (8, 6), (0, 255, 255, 0))  # red
    assert np.asarray(P.to_rgb(cmyk))[0, 0].tolist() == [255, 0, 0]
    p = Image.new("P", (8, 6))
    p.putpalette([0, 0, 255] * 256)
    assert np.asarray(P.to_rgb(p))[0, 0].tolist() == [0, 0, 255]
    pt = Image.new("P", (8, 6), 3)
    pt.putpalette([0, 0, 0] * 256)
    pt.info["transparency"] = 3  # transparent palette entry -> white
    assert np.asarray(P.to_rgb(pt)).min() == 255
    one = Image.new("1", (8, 6), 1)
    assert np.asarray(P.to_rgb(one)).min() == 255
    for img in (rgba, la, i16, i32, f, cmyk, p, pt, one, Image.new("L", (8, 6), 7),
                Image.new("YCbCr", (8, 6)), Image.new("HSV", (8, 6)), Image.new("LAB", (8, 6))):
        out = P.to_rgb(img)
        assert out.mode == "RGB" and out.size == img.size, img.mode
    # numpy arrays too
    assert P.to_rgb(np.zeros((5, 4), np.uint8)).size == (4, 5)
    assert P.to_rgb(np.zeros((5, 4, 4), np.uint8)).mode == "RGB"


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16", "I", "F", "CMYK", "P", "LA", "1"])
def test_preprocess_accepts_any_mode(mode):
    img = photo().convert("L").convert(mode) if mode in ("I;16", "I", "F") else photo().convert(mode)
    out = P.preprocess("canny", img)
    assert_map(out)


def test_missing_or_bad_image():
    with pytest.raises(InputImageError, match="no image"):
        P.preprocess("canny", None)
    with pytest.raises(InputImageError):
        P.preprocess("canny", "not an image")
    with pytest.raises(InputImageError):
        P.preprocess("none", Image.new("RGB", (0, 0)))
    with pytest.raises(InputImageError):
        P.to_rgb(np.zeros((2, 3, 7), np.uint8))


def test_bad_settings():
    img = photo()
    with pytest.raises(InvalidSettingError, match="no option 'sigma'"):
        P.preprocess("canny", img, sigma=3)
    with pytest.raises(InvalidSettingError):
        P.preprocess("canny", img, low_threshold=200, high_threshold=100)
    for bad in (0, 10, 100000, 512.5, "x", None):
        with pytest.raises(InvalidSettingError):
            P.preprocess("shuffle", img, resolution=bad)
    # None means "default"
    assert_map(P.preprocess("canny", img, low_threshold=None))


# ----------------------------------------------------------------------------- weighted detectors

WEIGHTED = [n for n, s in P.PREPROCESSORS.items() if s.needs_weights and n != "depth_zoe"]
SMALL_OPTIONS = {"seg": {"points_per_side": 2}}  # SAM's automatic masks: 4 prompts instead of 256


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_detector_runs_with_random_weights(name, annotators):
    folder = annotators.need(*P.PREPROCESSORS[name].files)
    assert P.available(name, annotators.path)
    out = P.preprocess(name, photo(), resolution=64, annotator_dir=folder, **SMALL_OPTIONS.get(name, {}))
    assert_map(out)


@pytest.mark.skipif(not SLOW, reason=(
    "ZoeDepth is BEiT-L (345M parameters): a random-init build takes ~15 s, its weight file 1.4 GB and "
    "one forward ~60 s on 2 CPU cores. Run with PFD_SLOW_TESTS=1."))
def test_depth_zoe_with_random_weights(annotators):
    folder = annotators.need("ZoeD_M12_N.pt")
    out = P.preprocess("depth_zoe", photo(), resolution=128, annotator_dir=folder)
    assert_map(out)


def test_loaded_weights_are_the_saved_ones(annotators):
    folder = annotators.need("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth",
                             "table5_pidinet.pth", "scannet.pt")
    det = P.get_detector("openpose_full", folder)
    impl = det.impl
    for est, fname in ((impl.body_estimation, "body_pose_model.pth"), (impl.hand_estimation, "hand_pose_model.pth"),
                       (impl.face_estimation, "facenet.pth")):
        saved = annotators.saved[fname]
        got = est.model.state_dict()
        assert got.keys() == saved.keys()
        for k in list(saved)[:: max(1, len(saved) // 7)]:
            assert torch.equal(got[k], saved[k]), (fname, k)
    pidi = P.get_detector("scribble", folder).impl.netNetwork.state_dict()
    k = next(iter(annotators.saved["table5_pidinet.pth"]))
    assert torch.equal(pidi[k], annotators.saved["table5_pidinet.pth"][k])
    # the hand and face networks run (random weights find no person, so the pipeline skips them)
    crop = np.asarray(photo(64, 64))
    with torch.no_grad():
        assert impl.hand_estimation.model(torch.zeros(1, 3, 64, 64)).shape == (1, 22, 8, 8)  # 21 points + bg
    heat = impl.face_estimation(crop)
    assert heat.shape == (71, 64, 64)


def test_safetensors_copy_is_accepted(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(1)
    sd = _net_hed().state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "ControlNetHED.safetensors"))
    assert P.available("hed", tmp_path)
    out = P.preprocess("hed", photo(), resolution=64, annotator_dir=tmp_path)
    assert_map(out)


def test_env_folder_is_searched(tmp_path, monkeypatch):
    write_fake(str(tmp_path), "mlsd_large_512_fp32.pth")
    monkeypatch.setenv(P.ENV_ANNOTATOR_DIR, str(tmp_path))
    assert P.available("mlsd")
    assert_map(P.preprocess("mlsd", photo(), resolution=64))


# ----------------------------------------------------------------------------- cache


def _count_reads(monkeypatch):
    reads = []
    real = P._read_weights

    def counting(path):
        reads.append(os.path.basename(str(path)))
        return real(path)

    monkeypatch.setattr(P, "_read_weights", counting)
    return reads


def test_detector_is_built_once_and_shared(tmp_path, monkeypatch):
    write_fake(str(tmp_path), "table5_pidinet.pth")
    reads = _count_reads(monkeypatch)
    a = P.get_detector("softedge_pidi", tmp_path)
    b = P.get_detector("softedge_pidi", str(tmp_path))
    assert a is b
    assert reads == ["table5_pidinet.pth"]
    c = P.get_detector("scribble", tmp_path)  # another detector on the same network
    assert c is not a and c.impl.netNetwork is a.impl.netNetwork
    assert reads == ["table5_pidinet.pth"]
    P.preprocess("scribble", photo(), resolution=64, annotator_dir=tmp_path)
    P.preprocess("softedge_pidi", photo(), resolution=64, annotator_dir=tmp_path)
    assert reads == ["table5_pidinet.pth"]


def test_concurrent_first_use_builds_once(tmp_path, monkeypatch):
    write_fake(str(tmp_path), "sk_model2.pth")
    reads = _count_reads(monkeypatch)
    real_build = P.COMPONENTS["lineart_coarse"].build
    gate = threading.Event()

    def slow_build(path):
        gate.wait(5)  # let every thread reach the cache before the first build finishes
        return real_build(path)

    monkeypatch.setitem(P.COMPONENTS, "lineart_coarse", P._Component(P.COMPONENTS["lineart_coarse"].file, slow_build))
    got, errors = [], []

    def worker():
        try:
            got.append(P.get_detector("lineart_coarse", tmp_path))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    gate.set()
    for t in threads:
        t.join(30)
    assert not errors
    assert len(got) == 4 and all(g is got[0] for g in got)
    assert reads == ["sk_model2.pth"]


# ----------------------------------------------------------------------------- missing / bad weights


def test_missing_weights_offline(tmp_path, offline_empty_cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not P.available("openpose", empty)
    with pytest.raises(ModelUnavailableError) as ei:
        P.preprocess("openpose", photo(), annotator_dir=empty)
    msg = str(ei.value)
    assert "'openpose'" in msg and "body_pose_model.pth" in msg and "lllyasviel/Annotators" in msg
    assert str(empty) in msg and "Hugging Face cache" in msg and "offline" in msg
    assert "upload a ready-made OpenPose map and choose 'use as-is' instead" in msg
    # every missing file named at once
    with pytest.raises(ModelUnavailableError) as ei:
        P.get_detector("openpose_full", empty)
    for f in ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"):
        assert f in str(ei.value)
    with pytest.raises(ModelUnavailableError, match="mobile_sam.pt.*dhkim2810/MobileSAM"):
        P.get_detector("seg", empty)
    with pytest.raises(ModelUnavailableError, match="body_pose_model.pth"):
        P.detect_pose_keypoints(photo(), annotator_dir=empty)
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        P.get_detector("depth", tmp_path / "nowhere")
    # a failure is not cached: once the file is there, it works
    write_fake(str(empty), "ControlNetHED.pth")
    assert P.available("hed", empty)
    assert_map(P.preprocess("hed", photo(), resolution=64, annotator_dir=empty))


def test_file_in_hf_cache_is_used_offline(tmp_path, offline_empty_cache):
    snap = offline_empty_cache / "models--lllyasviel--Annotators" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (offline_empty_cache / "models--lllyasviel--Annotators" / "refs").mkdir()
    (offline_empty_cache / "models--lllyasviel--Annotators" / "refs" / "main").write_text("0" * 40)
    write_fake(str(snap), "sk_model.pth")
    assert P.available("lineart")
    assert not P.available("lineart_anime")
    assert_map(P.preprocess("lineart", photo(), resolution=64))


def test_failed_download_is_reported(tmp_path, monkeypatch, offline_empty_cache):
    import huggingface_hub.constants as C

    monkeypatch.setattr(C, "HF_HUB_OFFLINE", False)

    def failing(wf):
        raise OSError("Connection refused")

    monkeypatch.setattr(P, "_hub_download", failing)
    with pytest.raises(ModelUnavailableError, match="download failed: OSError: Connection refused.*use as-is"):
        P.get_detector("mlsd", tmp_path)


def test_bad_weight_files(tmp_path, offline_empty_cache):
    (tmp_path / "ControlNetHED.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="ControlNetHED.pth.*use as-is"):
        P.get_detector("hed", tmp_path)
    # a file for another network
    torch.save({"conv.weight": torch.zeros(1)}, str(tmp_path / "mlsd_large_512_fp32.pth"))
    with pytest.raises(ModelUnavailableError, match="does not fit the M-LSD network.*missing keys"):
        P.get_detector("mlsd", tmp_path)
    # a pickle with arbitrary Python objects is refused, never executed
    torch.save({"state_dict": {"x": torch.zeros(1)}, "extra": _Evil()}, str(tmp_path / "table5_pidinet.pth"))
    _Evil.built = 0
    with pytest.raises(ModelUnavailableError, match="table5_pidinet.pth"):
        P.get_detector("scribble", tmp_path)
    assert _Evil.built == 0


class _Evil:
    built = 0

    def __reduce__(self):
        return (_Evil._touch, ())

    @staticmethod
    def _touch():
        _Evil.built += 1
        return None


def test_run_errors_become_prompt_free_errors(tmp_path, monkeypatch):
    write_fake(str(tmp_path), "ControlNetHED.pth")
    det = P.get_detector("hed", tmp_path)

    class Boom(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            raise RuntimeError("out of memory")

    monkeypatch.setattr(det.impl, "netNetwork", Boom())
    with pytest.raises(PromptFreeError, match="'hed' preprocessor failed.*out of memory.*use as-is"):
        det(photo(), resolution=64)


# ----------------------------------------------------------------------------- pose keypoints


def test_pose_keypoints_with_random_weights(annotators):
    folder = annotators.need("body_pose_model.pth")
    people = P.detect_pose_keypoints(photo(), annotator_dir=folder)
    assert isinstance(people, list)
    for person in people:
        assert len(person) == 18 == len(P.BODY_KEYPOINT_NAMES)
        for kp in person:
            assert kp is None or (len(kp) == 3 and all(isinstance(v, float) for v in kp))


def test_pose_keypoints_structure_and_scaling(annotators, monkeypatch):
    from controlnet_aux.open_pose.body import Body

    folder = annotators.need("body_pose_model.pth")
    seen = {}

    def fake_body(self, bgr):
        seen["shape"], seen["pixel"] = bgr.shape, bgr[0, 0].tolist()
        h, w = bgr.shape[:2]
        # candidates: x, y, score, id; one person with the nose at (0, 0), the neck at the far corner
        candidate = np.array([[0.0, 0.0, 0.9, 0], [w - 1.0, h - 1.0, 0.5, 1]])
        subset = np.full((1, 20), -1.0)
        subset[0, 0], subset[0, 1], subset[0, 18], subset[0, 19] = 0, 1, 1.4, 2
        return candidate, subset

    monkeypatch.setattr(Body, "__call__", fake_body)
    img = Image.new("RGB", (400, 300), (255, 0, 0))
    people = P.detect_pose_keypoints(img, annotator_dir=folder, resolution=150)
    assert seen["shape"] == (150, 200, 3)  # shrunk to the resolution on the short side
    assert seen["pixel"] == [0, 0, 255]  # the body network gets BGR
    assert len(people) == 1 and len(people[0]) == 18
    nose, neck = people[0][0], people[0][1]
    assert nose == (0.0, 0.0, pytest.approx(0.9))
    assert neck == (pytest.approx(398.0), pytest.approx(298.0), pytest.approx(0.5))  # scaled back x2
    assert all(kp is None for kp in people[0][2:])
    # nobody found -> empty list
    monkeypatch.setattr(Body, "__call__", lambda self, bgr: (np.zeros((0, 4)), np.zeros((0, 20))))
    assert P.detect_pose_keypoints(img, annotator_dir=folder) == []
    with pytest.raises(InputImageError):
        P.detect_pose_keypoints(None, annotator_dir=folder)
