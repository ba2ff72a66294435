"""prompt_free.detectors: every detector run for real, offline, on CPU, through the engine.

Weighted detectors get random-initialised networks built from controlnet_aux's own model
classes, saved under the hub file names and in the layout the real files have (e.g. OpenPose
body/hand keys without their first component, PiDiNet under "state_dict" with "module."
prefixes, NormalBae and ZoeDepth under "model"), then loaded by ``engine.detector`` from a tmp
folder, the env folder, the registry's ``annotators:`` folder or a fake Hugging Face cache.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from prompt_free import detectors as D
from prompt_free.engine import Engine
from prompt_free.errors import (
    ConfigError,
    InputImageError,
    InvalidSettingError,
    ModelUnavailableError,
    PromptFreeError,
)
from prompt_free.registry import DEFAULT_CHECKPOINTS, Registry
from tests.helpers.models import net_hed, write_fake

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


ANNOTATOR_REPO = {"repo": "lllyasviel/Annotators"}  # the real profile's `annotators:` section


def registry(**sections):
    """The tiny profile, with extra sections (e.g. ``annotators``)."""
    data = yaml.safe_load(DEFAULT_CHECKPOINTS.read_text())["profiles"]["tiny"]
    data.update(sections)
    return Registry.from_dict(data, profile="tiny-detectors")


def new_engine(**sections):
    return Engine(registry(**sections), device="cpu")


@pytest.fixture(scope="module")
def annotators(tmp_path_factory):
    return FakeAnnotators(tmp_path_factory.mktemp("annotators"))


@pytest.fixture(scope="module")
def engine():
    """One engine for the detectors that only need to run (shared networks built once)."""
    return new_engine()


@pytest.fixture(autouse=True)
def _no_env_folder(monkeypatch):
    monkeypatch.delenv("PFD_ANNOTATOR_DIR", raising=False)


@pytest.fixture
def offline_empty_cache(monkeypatch, tmp_path):
    """The hub offline and an empty HF cache; a download attempt fails the test."""
    import huggingface_hub
    import huggingface_hub.constants as C

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # read by prompt_free.settings.hub_offline
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache))
    real = huggingface_hub.hf_hub_download

    def cache_only(*args, **kwargs):
        assert kwargs.get("local_files_only"), f"tried to download {args} while offline"
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", cache_only)
    return cache


def in_hf_cache(cache, filename, repo="lllyasviel/Annotators"):
    """Write a fake ``filename`` into the HF cache layout of ``repo``; returns its path."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True, exist_ok=True)
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text("0" * 40)
    write_fake(str(snap), filename)
    return snap / filename


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


def run(engine, name, image, annotator_dir=None, **kw):
    return engine.detector(name, annotator_dir)(image, **kw)


def network_builds(engine):
    """How many times the engine built each shared network (by weight file name)."""
    counts = {}
    for key, n in engine.load_counts.items():
        if key[0] == "detector networks":
            counts[key[1]] = counts.get(key[1], 0) + n
    return counts


# ----------------------------------------------------------------------------- the table

EXPECTED_KINDS = {
    "canny": "canny", "openpose": "openpose", "openpose_hand": "openpose", "openpose_face": "openpose",
    "openpose_full": "openpose", "depth": "depth", "depth_zoe": "depth", "normal": "normal",
    "normal_bae": "normal", "hed": "softedge", "softedge": "softedge", "softedge_pidi": "softedge",
    "scribble": "scribble", "scribble_hed": "scribble", "mlsd": "mlsd", "lineart": "lineart",
    "lineart_coarse": "lineart", "lineart_anime": "lineart_anime", "seg": "seg", "shuffle": "shuffle", "none": None,
}


def test_specs_names_files_kinds_and_options():
    assert {n: s.files for n, s in D.SPECS.items()} == EXPECTED_FILES
    assert {n: s.kind for n, s in D.SPECS.items()} == EXPECTED_KINDS
    for name, spec in D.SPECS.items():
        assert spec.name == name and spec.label and spec.map_kind
        assert spec.needs_weights == bool(spec.files)
        assert spec.kind is None or spec.kind in D.KINDS
        assert spec.nearest == (name == "seg")
    assert [w.repo for w in D.SPECS["seg"].weights] == ["dhkim2810/MobileSAM"]
    assert all(w.repo is None for w in D.SPECS["openpose_full"].weights)  # from the registry's source
    assert D.SPECS["canny"].options == {"low_threshold": 100, "high_threshold": 200}
    assert D.resolve_name("openpose_withfacehand") == "openpose_full"
    assert D.resolve_name("openpose_withface") == "openpose_face"
    assert D.resolve_name(" Canny ") == "canny"
    assert not hasattr(D, "AUTO_PREPROCESSOR")
    with pytest.raises(ConfigError, match="unknown preprocessor 'sobel'.*canny"):
        new_engine().detector("sobel")
    with pytest.raises(ConfigError):
        D.available("", None)


def test_every_controlnet_default_preprocessor_makes_maps_of_its_kind():
    for profile in ("real", "tiny"):
        reg = Registry.load(DEFAULT_CHECKPOINTS, profile)
        assert set(reg.names("controlnets")) == set(D.KINDS)
        for name in reg.names("controlnets"):
            pre = D.resolve_name(reg.entry("controlnets", name).option("preprocessor"))
            assert D.SPECS[pre].kind in (name, None), (profile, name, pre)


def test_no_gradio_or_ui_import():
    folder = os.path.dirname(D.__file__)
    for f in os.listdir(folder):
        if f.endswith(".py"):
            src = open(os.path.join(folder, f), encoding="utf-8").read()
            assert "gradio" not in src and "import ui" not in src, f


def test_every_torch_load_is_weights_only(tmp_path, monkeypatch):
    write_fake(str(tmp_path), "sk_model.pth")
    write_fake(str(tmp_path), "body_pose_model.pth")
    calls = []
    real = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    eng = new_engine()
    eng.detector("lineart", tmp_path)
    eng.detector("openpose", tmp_path)
    assert len(calls) == 2 and all(c is True for c in calls)


# ----------------------------------------------------------------------------- weight-free


def test_canny_edges_exactly_on_the_rectangle(engine):
    a = np.zeros((H, W, 3), np.uint8)
    a[24:72, 32:96] = 255  # rows 24..71, cols 32..95
    out = run(engine, "canny", Image.fromarray(a))
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
    none = np.asarray(run(engine, "canny", Image.fromarray(a), low_threshold=5000, high_threshold=6000))
    assert none.max() == 0


def test_canny_on_a_flat_image_is_empty_and_keeps_size(engine):
    out = run(engine, "canny", Image.new("RGB", (77, 33), (10, 200, 30)))
    assert_map(out, (77, 33))
    assert np.asarray(out).max() == 0


def test_shuffle_and_none(engine):
    img = photo()
    out = run(engine, "shuffle", img, resolution=128)
    assert_map(out)
    assert np.asarray(out).std() > 0
    out = run(engine, "none", img)
    assert_map(out)
    assert np.array_equal(np.asarray(out), np.asarray(img))
    for name in ("canny", "shuffle", "none"):
        assert D.available(name, engine.registry) and D.available(name, None)
        assert not D.SPECS[name].needs_weights


# ----------------------------------------------------------------------------- input images


@pytest.mark.parametrize("mode", ["RGBA", "L", "I;16", "I", "F", "CMYK", "P", "LA", "1"])
def test_detectors_accept_any_mode(mode, engine):
    img = photo().convert("L").convert(mode) if mode in ("I;16", "I", "F") else photo().convert(mode)
    assert_map(run(engine, "canny", img))


def test_missing_or_bad_image(engine):
    with pytest.raises(InputImageError, match="no control image given"):
        run(engine, "canny", None)
    with pytest.raises(InputImageError, match="does not exist"):
        run(engine, "canny", "not an image")
    with pytest.raises(InputImageError, match="is empty"):
        run(engine, "none", Image.new("RGB", (0, 0)))


def test_bad_settings(engine):
    img = photo()
    with pytest.raises(InvalidSettingError, match="no option 'sigma'"):
        run(engine, "canny", img, sigma=3)
    with pytest.raises(InvalidSettingError):
        run(engine, "canny", img, low_threshold=200, high_threshold=100)
    for bad in (0, 10, 100000, 512.5, "x", None):
        with pytest.raises(InvalidSettingError, match="detection resolution"):
            run(engine, "shuffle", img, resolution=bad)
    # None means "default"
    assert_map(run(engine, "canny", img, low_threshold=None))


# ----------------------------------------------------------------------------- weighted detectors

WEIGHTED = [n for n, s in D.SPECS.items() if s.needs_weights and n != "depth_zoe"]
SMALL_OPTIONS = {"seg": {"points_per_side": 2}}  # SAM's automatic masks: 4 prompts instead of 256


@pytest.mark.parametrize("name", WEIGHTED)
def test_weighted_detector_runs_with_random_weights(name, annotators, engine):
    folder = annotators.need(*D.SPECS[name].files)
    assert D.available(name, engine.registry, folder)
    out = run(engine, name, photo(), folder, resolution=64, **SMALL_OPTIONS.get(name, {}))
    assert_map(out)


@pytest.mark.skipif(not SLOW, reason=(
    "ZoeDepth is BEiT-L (345M parameters): a random-init build takes ~15 s, its weight file 1.4 GB and "
    "one forward ~60 s on 2 CPU cores. Run with PFD_SLOW_TESTS=1."))
def test_depth_zoe_with_random_weights(annotators, engine):
    folder = annotators.need("ZoeD_M12_N.pt")
    assert_map(run(engine, "depth_zoe", photo(), folder, resolution=128))


def test_loaded_weights_are_the_saved_ones(annotators, engine):
    folder = annotators.need("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth",
                             "table5_pidinet.pth", "scannet.pt")
    impl = engine.detector("openpose_full", folder).impl
    for est, fname in ((impl.body_estimation, "body_pose_model.pth"), (impl.hand_estimation, "hand_pose_model.pth"),
                       (impl.face_estimation, "facenet.pth")):
        saved = annotators.saved[fname]
        got = est.model.state_dict()
        assert got.keys() == saved.keys()
        for k in list(saved)[:: max(1, len(saved) // 7)]:
            assert torch.equal(got[k], saved[k]), (fname, k)
    pidi = engine.detector("scribble", folder).impl.netNetwork.state_dict()
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
    sd = net_hed().state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "ControlNetHED.safetensors"))
    eng = new_engine()
    assert D.available("hed", eng.registry, tmp_path)
    net = eng.detector("hed", tmp_path).impl.netNetwork
    assert torch.equal(net.state_dict()[next(iter(sd))], sd[next(iter(sd))])
    assert_map(run(eng, "hed", photo(), tmp_path, resolution=64))


# ----------------------------------------------------------------------------- where weights are found


def test_env_folder_is_searched(tmp_path, monkeypatch):
    write_fake(str(tmp_path), "mlsd_large_512_fp32.pth")
    eng = new_engine()
    assert not D.available("mlsd", eng.registry)
    monkeypatch.setenv("PFD_ANNOTATOR_DIR", str(tmp_path))
    assert D.available("mlsd", eng.registry)
    assert_map(run(eng, "mlsd", photo(), resolution=64))


def test_registry_annotators_folder_is_searched(tmp_path, offline_empty_cache):
    folder = tmp_path / "from-yaml"
    folder.mkdir()
    write_fake(str(folder), "sk_model.pth")
    write_fake(str(folder), "mobile_sam.pt")  # a file with its own hub repo is found in the folder too
    eng = new_engine(annotators={"path": str(folder)})
    assert D.available("lineart", eng.registry) and D.available("seg", eng.registry)
    assert not D.available("lineart", new_engine().registry)
    assert_map(run(eng, "lineart", photo(), resolution=64))
    # the caller's folder comes first: its (different) file is the one loaded
    first = tmp_path / "first"
    first.mkdir()
    saved = write_fake(str(first), "sk_model.pth", seed=5)
    net = eng.detector("lineart", first).impl.model
    k = next(iter(saved))
    assert torch.equal(net.state_dict()[k], saved[k])
    # a folder written relative to checkpoints.yaml
    data = yaml.safe_load(DEFAULT_CHECKPOINTS.read_text())["profiles"]["tiny"]
    data["annotators"] = {"path": "from-yaml"}
    rel = Engine(Registry.from_dict(data, base_dir=tmp_path), device="cpu")
    assert D.available("lineart", rel.registry) and not D.available("mlsd", rel.registry)


def test_file_in_hf_cache_is_used_offline_only_when_the_profile_names_a_repo(offline_empty_cache):
    in_hf_cache(offline_empty_cache, "sk_model.pth")
    in_hf_cache(offline_empty_cache, "mobile_sam.pt", repo="dhkim2810/MobileSAM")
    eng = new_engine(annotators=ANNOTATOR_REPO)
    assert D.available("lineart", eng.registry)
    assert D.available("seg", eng.registry)  # from its own repo
    assert not D.available("lineart_anime", eng.registry)
    assert_map(run(eng, "lineart", photo(), resolution=64))
    tiny = new_engine()  # no `annotators:` section: local folders only
    assert not D.available("lineart", tiny.registry) and not D.available("seg", tiny.registry)
    with pytest.raises(ModelUnavailableError, match="no `annotators:` source"):
        tiny.detector("lineart")


# ----------------------------------------------------------------------------- the engine's cache


def test_second_call_builds_nothing_and_networks_are_shared(tmp_path, monkeypatch):
    write_fake(str(tmp_path), "table5_pidinet.pth")
    reads = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda f, *a, **k: reads.append(os.path.basename(str(f))) or real(f, *a, **k))
    eng = new_engine()
    a = eng.detector("softedge_pidi", tmp_path)
    built = dict(eng.load_counts)
    b = eng.detector("softedge_pidi", str(tmp_path))
    assert a is b and dict(eng.load_counts) == built
    c = eng.detector("scribble", tmp_path)  # another detector on the same network
    assert c is not a and c.impl.netNetwork is a.impl.netNetwork
    assert network_builds(eng) == {"table5_pidinet.pth": 1}
    run(eng, "scribble", photo(), tmp_path, resolution=64)
    run(eng, "softedge_pidi", photo(), tmp_path, resolution=64)
    assert reads == ["table5_pidinet.pth"]
    assert sorted(k[1] for k in eng.load_counts if k[0] == "detectors") == ["scribble", "softedge_pidi"]


def test_no_cache_outside_the_engine(tmp_path):
    write_fake(str(tmp_path), "sk_model2.pth")
    one, two = new_engine(), new_engine()
    a, b = one.detector("lineart_coarse", tmp_path), two.detector("lineart_coarse", tmp_path)
    assert a is not b and a.impl.model is not b.impl.model
    assert network_builds(one) == network_builds(two) == {"sk_model2.pth": 1}


def test_other_weight_folders_build_anew(tmp_path, monkeypatch):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        write_fake(str(tmp_path / d), "sk_model2.pth", seed=ord(d))
    eng = new_engine()
    a = eng.detector("lineart_coarse", tmp_path / "a")
    monkeypatch.setenv("PFD_ANNOTATOR_DIR", str(tmp_path / "b"))
    b = eng.detector("lineart_coarse", tmp_path / "a")  # same argument, another env folder
    c = eng.detector("lineart_coarse")  # the env folder only
    assert a is not b and b is not c and a.impl.model is not c.impl.model
    assert network_builds(eng) == {"sk_model2.pth": 3}
    k = next(iter(a.impl.model.state_dict()))
    assert not torch.equal(a.impl.model.state_dict()[k], c.impl.model.state_dict()[k])


def test_concurrent_first_use_builds_once(tmp_path, monkeypatch):
    write_fake(str(tmp_path), "sk_model2.pth")
    gate, reads = threading.Event(), []
    real = torch.load

    def slow_load(f, *a, **k):
        reads.append(os.path.basename(str(f)))
        gate.wait(5)  # let every thread reach the engine before the first build finishes
        return real(f, *a, **k)

    monkeypatch.setattr(torch, "load", slow_load)
    eng = new_engine()
    got, errors = [], []

    def worker():
        try:
            got.append(eng.detector("lineart_coarse", tmp_path))
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
    assert reads == ["sk_model2.pth"] and network_builds(eng) == {"sk_model2.pth": 1}


# ----------------------------------------------------------------------------- missing / bad weights


def test_missing_weights_offline(tmp_path, offline_empty_cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    eng = new_engine(annotators=ANNOTATOR_REPO)
    assert not D.available("openpose", eng.registry, empty)
    with pytest.raises(ModelUnavailableError) as ei:
        run(eng, "openpose", photo(), empty)
    assert isinstance(ei.value, D.AnnotatorUnavailableError) and "use as-is" not in ei.value.problem
    msg = str(ei.value)
    assert "'openpose'" in msg and "body_pose_model.pth" in msg and "lllyasviel/Annotators" in msg
    assert str(empty) in msg and "Hugging Face cache" in msg and "offline" in msg
    assert "upload a ready-made OpenPose map and choose 'use as-is' instead" in msg
    # every missing file named at once
    with pytest.raises(ModelUnavailableError) as ei:
        eng.detector("openpose_full", empty)
    for f in ("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth"):
        assert f in str(ei.value)
    with pytest.raises(ModelUnavailableError, match="mobile_sam.pt.*dhkim2810/MobileSAM"):
        eng.detector("seg", empty)
    with pytest.raises(ModelUnavailableError, match="body_pose_model.pth"):
        D.pose_keypoints(eng, photo(), annotator_dir=empty)
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        eng.detector("depth", tmp_path / "nowhere")
    # a failure is not cached: once the file is there, it works
    write_fake(str(empty), "ControlNetHED.pth")
    with pytest.raises(ModelUnavailableError):
        eng.detector("hed", empty / "not-yet")
    assert D.available("hed", eng.registry, empty)
    assert_map(run(eng, "hed", photo(), empty, resolution=64))


def test_failed_download_is_reported(tmp_path, monkeypatch, offline_empty_cache):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    cache_only = huggingface_hub.hf_hub_download
    asked = []

    def failing(repo, filename, **kwargs):
        if kwargs.get("local_files_only"):
            return cache_only(repo, filename, **kwargs)
        asked.append((repo, filename))
        raise OSError("Connection refused")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing)
    eng = new_engine(annotators=ANNOTATOR_REPO)
    with pytest.raises(ModelUnavailableError, match="lllyasviel/Annotators.*download failed.*OSError.*use as-is"):
        eng.detector("mlsd", tmp_path)
    assert asked == [("lllyasviel/Annotators", "mlsd_large_512_fp32.pth")]
    assert not D.available("mlsd", eng.registry, tmp_path) and len(asked) == 1  # available() never downloads
    with pytest.raises(ModelUnavailableError, match="downloads disabled"):
        Engine(eng.registry, device="cpu", allow_download=False).detector("mlsd", tmp_path)


def test_bad_weight_files(tmp_path, offline_empty_cache):
    eng = new_engine(annotators=ANNOTATOR_REPO)
    (tmp_path / "ControlNetHED.pth").write_bytes(b"this is not a checkpoint")
    with pytest.raises(ModelUnavailableError, match="ControlNetHED.pth.*lllyasviel/Annotators.*use as-is"):
        eng.detector("hed", tmp_path)
    # a file for another network
    torch.save({"conv.weight": torch.zeros(1)}, str(tmp_path / "mlsd_large_512_fp32.pth"))
    with pytest.raises(ModelUnavailableError, match="does not fit the M-LSD network.*missing keys"):
        eng.detector("mlsd", tmp_path)
    # a pickle with arbitrary Python objects is refused, never executed
    torch.save({"state_dict": {"x": torch.zeros(1)}, "extra": _Evil()}, str(tmp_path / "table5_pidinet.pth"))
    _Evil.built = 0
    with pytest.raises(ModelUnavailableError, match="table5_pidinet.pth"):
        eng.detector("scribble", tmp_path)
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
    det = new_engine().detector("hed", tmp_path)

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
    folder = annotators.need("body_pose_model.pth", "hand_pose_model.pth", "facenet.pth")
    eng = new_engine()
    full = eng.detector("openpose_full", folder)
    people = D.pose_keypoints(eng, photo(), annotator_dir=folder)
    assert isinstance(people, list)
    for person in people:
        assert len(person) == 18 == len(D.BODY_KEYPOINT_NAMES)
        for kp in person:
            assert kp is None or (len(kp) == 3 and all(isinstance(v, float) for v in kp))
    # the keypoints use the body network of the skeleton detectors, held by the engine
    assert network_builds(eng)["body_pose_model.pth"] == 1
    assert eng.detector("openpose", folder).impl.body_estimation is full.impl.body_estimation


def test_pose_keypoints_structure_and_scaling(annotators, monkeypatch, engine):
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
    people = D.pose_keypoints(engine, img, annotator_dir=folder, resolution=150)
    assert seen["shape"] == (150, 200, 3)  # shrunk to the resolution on the short side
    assert seen["pixel"] == [0, 0, 255]  # the body network gets BGR
    assert len(people) == 1 and len(people[0]) == 18
    nose, neck = people[0][0], people[0][1]
    assert nose == (0.0, 0.0, pytest.approx(0.9))
    assert neck == (pytest.approx(398.0), pytest.approx(298.0), pytest.approx(0.5))  # scaled back x2
    assert all(kp is None for kp in people[0][2:])
    # nobody found -> empty list
    monkeypatch.setattr(Body, "__call__", lambda self, bgr: (np.zeros((0, 4)), np.zeros((0, 20))))
    assert D.pose_keypoints(engine, img, annotator_dir=folder) == []
    with pytest.raises(InputImageError):
        D.pose_keypoints(engine, None, annotator_dir=folder)
