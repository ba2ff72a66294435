"""The engine as a resource manager (tiny profile, CPU): memory budget and eviction, the report,
loads that block nobody else, and out-of-memory answered."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from prompt_free.engine import Engine
from prompt_free.errors import InvalidSettingError, ModelUnavailableError
from prompt_free.memory import REPORT_KINDS, DeviceMemoryError, MemoryBudgetError, parse_size
from prompt_free.registry import DEFAULT_CHECKPOINTS, Registry
from prompt_free.tasks import (
    CompareSettings,
    ControlSettings,
    ControlSpec,
    VariationSettings,
    compare,
    image_variation,
    reference_control,
)
from tests.helpers.app import EXAMPLES
from tests.helpers.models import FailingUNet

pytestmark = pytest.mark.timeout(600)

REF = EXAMPLES / "chelsea.jpg"
POSE, DEPTH = EXAMPLES / "pose_standing.png", EXAMPLES / "depth_spheres.png"
CANNY, SCRIBBLE = EXAMPLES / "canny_house.png", EXAMPLES / "scribble_rocket.png"


def tiny_engine(**kw) -> Engine:
    return Engine(Registry.load(None, "tiny"), device="cpu", **kw)


def pixels(result):
    return [np.asarray(im) for im in result.images]


# A scripted session over every tab's models: two base models, three SeeCoders, several
# ControlNets (two at once), the text encoder and a detector of the comparison.
MIX = [
    ("variation", dict(seecoder="SeeCoder", base_model="Tiny SD")),
    ("control", dict(seecoder="SeeCoder-PA", base_model="Tiny SD (other seed)"), [("openpose", POSE)]),
    ("control", dict(seecoder="SeeCoder-Anime", base_model="Tiny SD"), [("openpose", POSE), ("depth", DEPTH)]),
    ("variation", dict(seecoder="SeeCoder-PA", base_model="Tiny SD (other seed)")),
    ("compare", dict(seecoder="SeeCoder", base_model="Tiny SD")),
    ("control", dict(seecoder="SeeCoder", base_model="Tiny SD (other seed)"), [("canny", CANNY), ("scribble", SCRIBBLE)]),
    ("variation", dict(seecoder="SeeCoder-Anime", base_model="Tiny SD")),
]


def run(engine, request):
    kind, models = request[0], request[1]
    common = dict(steps=2, seed=5, width=64, height=64, **models)
    if kind == "variation":
        return image_variation(engine, REF, VariationSettings(**common))
    if kind == "control":
        specs = [ControlSpec(name, image) for name, image in request[2]]
        return reference_control(engine, REF, specs, ControlSettings(**common))
    return compare(engine, REF, CANNY, "canny", settings=CompareSettings(**common, methods=("prompt_free", "dual_controlnet")))


def device_bytes(engine) -> int:
    return sum(e["bytes"] for e in engine.memory_report() if e["where"] == "device")


# ----------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("value, expected", [
    ("8GB", 8 * 10**9), ("512MiB", 512 * 2**20), ("1.5 G", 15 * 10**8), ("123456789", 123456789),
    (4096, 4096), ("2gib", 2 * 2**30), (None, None), ("", None),
])
def test_sizes_are_read_in_units_or_bytes(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", ["8 parsecs", "-1GB", "0", "lots"])
def test_bad_sizes_are_clear_errors(value):
    with pytest.raises(InvalidSettingError, match="memory budget must be"):
        parse_size(value)


def test_budget_from_argument_environment_and_default(monkeypatch):
    monkeypatch.setenv("PFD_MEMORY_BUDGET", "3GB")
    assert Engine.from_profile("tiny", device="cpu").memory.budget == 3 * 10**9
    assert Engine.from_profile("tiny", device="cpu", memory_budget="1MiB").memory.budget == 2**20
    monkeypatch.setenv("PFD_MEMORY_BUDGET", "three")
    with pytest.raises(InvalidSettingError, match="PFD_MEMORY_BUDGET must be a size"):
        Engine.from_profile("tiny", device="cpu")
    monkeypatch.delenv("PFD_MEMORY_BUDGET")
    budget = tiny_engine().memory.budget
    assert 0 < budget < 2**50  # a share of physical RAM on the CPU


# ----------------------------------------------------------------------------- report
def test_memory_report_has_one_entry_per_model_as_users_know_it():
    engine = tiny_engine()
    run(engine, MIX[2])
    report = engine.memory_report()
    names = {(e["kind"], e["name"]) for e in report}
    assert names == {("seecoder", "SeeCoder-Anime"), ("base_model", "Tiny SD"), ("controlnet", "openpose"),
                     ("controlnet", "depth")}
    assert all(e["kind"] in REPORT_KINDS and e["where"] == "device" for e in report)
    base = engine.base_model("Tiny SD")
    want = sum(t.nbytes for m in (base.unet, base.vae) for t in list(m.parameters()) + list(m.buffers()))
    assert next(e["bytes"] for e in report if e["kind"] == "base_model") == want


def test_text_encoder_and_detector_of_the_comparison_are_reported():
    engine = tiny_engine()
    run(engine, MIX[4])
    kinds = {e["kind"] for e in engine.memory_report()}
    assert {"seecoder", "base_model", "controlnet", "text_encoder", "detector"} <= kinds


# ----------------------------------------------------------------------------- the budget
def test_a_session_stays_within_a_tight_budget_with_the_same_pictures():
    """Budget = the largest single request of the mix: after every request the models on the
    device fit it, evictions happen, and the pictures are those of an engine without a budget."""
    largest = 0
    for request in MIX:
        fresh = tiny_engine()
        run(fresh, request)
        largest = max(largest, device_bytes(fresh))
    free, tight = tiny_engine(), tiny_engine(memory_budget=largest)
    for request in MIX:
        want = pixels(run(free, request))
        got = pixels(run(tight, request))
        assert device_bytes(tight) <= largest, request
        assert all(np.array_equal(a, b) for a, b in zip(want, got)), request
    assert device_bytes(free) > largest  # without a budget the session holds more
    assert max(tight.load_counts.values()) > 1  # models were evicted and loaded again


def test_a_request_too_big_for_the_budget_is_a_clear_error_not_out_of_memory():
    engine = tiny_engine()
    run(engine, MIX[0])
    one_base = next(e["bytes"] for e in engine.memory_report() if e["kind"] == "base_model")
    small = tiny_engine(memory_budget=one_base)  # no room for the SeeCoder beside it
    with pytest.raises(MemoryBudgetError, match=r"needs .* but the memory budget is .*MiB.*--memory-budget"):
        run(small, MIX[0])
    assert device_bytes(small) <= one_base


def test_count_limits_still_apply_with_a_budget():
    engine = tiny_engine(max_base_models=1)
    run(engine, MIX[0])
    run(engine, MIX[3])
    bases = [e["name"] for e in engine.memory_report() if e["kind"] == "base_model"]
    assert bases == ["Tiny SD (other seed)"]


# ----------------------------------------------------------------------------- loading
def test_one_model_requested_at_once_by_several_threads_is_built_once():
    engine = tiny_engine()
    barrier = threading.Barrier(4)
    got = []

    def load():
        barrier.wait()
        got.append(engine.base_model("Tiny SD"))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert engine.load_counts[("base_models", "Tiny SD")] == 1 and all(g is got[0] for g in got)


def stuck_download(monkeypatch, started: threading.Event, release: threading.Event) -> None:
    """The hub's download of anything not cached hangs until ``release`` (then fails)."""
    import huggingface_hub

    def hf_hub_download(repo, filename, *, local_files_only=False, **kw):
        if local_files_only:
            raise FileNotFoundError("not in the cache")
        started.set()
        release.wait(120)  # a download that does not finish until the test says so
        raise OSError("connection reset")

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)


def stuck_profile() -> dict:
    import yaml

    data = yaml.safe_load(DEFAULT_CHECKPOINTS.read_text())["profiles"]["tiny"]
    data["base_models"]["Stuck"] = {"repo": "pfd-tests/stuck", "file": "model.safetensors", "format": "single_file"}
    return data


def test_a_stuck_download_blocks_no_request_on_loaded_models(monkeypatch):
    """One request waits on a download that does not finish; a request on a model that is
    already loaded runs to the end meanwhile. Released, the stuck one fails clearly."""
    engine = Engine(Registry.from_dict(stuck_profile(), profile="tiny-stuck"), device="cpu")
    run(engine, MIX[0])  # Tiny SD and SeeCoder are resident

    started, release = threading.Event(), threading.Event()

    stuck_download(monkeypatch, started, release)
    errors = []

    def stuck_request():
        try:
            image_variation(engine, REF, VariationSettings(base_model="Stuck", steps=1, width=64, height=64))
        except ModelUnavailableError as e:
            errors.append(e)

    stuck = threading.Thread(target=stuck_request)
    stuck.start()
    try:
        assert started.wait(30), "the stuck request never reached its download"
        t0 = time.perf_counter()
        result = run(engine, MIX[0])
        assert result.images and time.perf_counter() - t0 < 60
        assert stuck.is_alive()  # still waiting on its download
    finally:
        release.set()
        stuck.join(60)
    assert errors and "Stuck" in str(errors[0])


# ----------------------------------------------------------------------------- out of memory
def test_out_of_memory_once_is_retried_with_the_same_pixels():
    want = pixels(run(tiny_engine(), MIX[0]))
    engine = tiny_engine()
    failing = FailingUNet(engine.base_model("Tiny SD").unet, times=1)
    try:
        got = pixels(run(engine, MIX[0]))
    finally:
        failing.remove()
    assert failing.left == 0 and all(np.array_equal(a, b) for a, b in zip(want, got))


def test_out_of_memory_twice_is_a_clear_error_and_the_next_request_is_as_on_a_fresh_engine(caplog):
    want = pixels(run(tiny_engine(), MIX[0]))
    engine = tiny_engine()
    failing = FailingUNet(engine.base_model("Tiny SD").unet, times=2)
    with caplog.at_level(logging.WARNING, logger="prompt_free.memory"):
        with pytest.raises(DeviceMemoryError, match=r"out of device memory while sampling 1 image\(s\) at 64x64.*budget"):
            run(engine, MIX[0])
    failing.remove()
    assert any("out of device memory twice" in r.getMessage() for r in caplog.records)
    got = pixels(run(engine, MIX[0]))
    assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_in_the_app_a_stuck_download_freezes_no_other_client(monkeypatch, tmp_path):
    """Two clients of the served app: one picks a base model whose download hangs, the other
    generates on the default model meanwhile (Gradio runs both; the engine serialises only the
    device work)."""
    import yaml
    from gradio_client import Client, handle_file

    from tests.helpers.app import running_app

    path = tmp_path / "checkpoints.yaml"
    path.write_text(yaml.safe_dump({"profiles": {"tiny": stuck_profile()}}))
    started, release = threading.Event(), threading.Event()
    stuck_download(monkeypatch, started, release)

    def args(base):
        return [handle_file(str(REF)), "SeeCoder", base, 2.0, 1, 256, 256, 3, False, 1, "DDIM"]  # not all-tiny: real slider bounds

    with running_app("tiny", checkpoints=str(path)) as (engine, demo, url):
        stuck_client, other_client = Client(url, verbose=False), Client(url, verbose=False)
        job = stuck_client.submit(*args("Stuck"), api_name="/image_variation")
        try:
            assert started.wait(60), "the stuck request never reached its download"
            gallery, info, seed = other_client.predict(*args("Tiny SD"), api_name="/image_variation")
            assert len(gallery) == 1 and not job.done()
        finally:
            release.set()
        with pytest.raises(Exception, match="Stuck"):
            job.result(timeout=60)


def test_the_app_takes_its_budget_from_the_option_or_the_environment(monkeypatch):
    from app import create_app, parse_args

    assert parse_args(["--memory-budget", "8GB", "--ram-budget", "16GB"]).memory_budget == "8GB"
    engine, _ = create_app("tiny", memory_budget="64MiB")
    assert engine.memory.budget == 64 * 2**20
    monkeypatch.setenv("PFD_MEMORY_BUDGET", "123456789")
    engine, _ = create_app("tiny")
    assert engine.memory.budget == 123456789


def test_models_in_memory_table_lists_the_report():
    from prompt_free.app.widgets import memory_table

    engine = tiny_engine(memory_budget="1GB")
    assert memory_table(engine).startswith("No model loaded yet (0.0 MiB of a 953.7 MiB budget on cpu)")
    run(engine, MIX[2])
    table = memory_table(engine)
    assert "| openpose | controlnet | device |" in table and "| Tiny SD | base model | device |" in table


# ----------------------------------------------------------------------------- adopted models, reloads
def base_bytes(engine, name: str) -> int:
    return next(e["bytes"] for e in engine.memory_report() if e["kind"] == "base_model" and e["name"] == name)


def test_an_adopted_model_is_rebuilt_by_its_own_builder_after_eviction():
    """``adopt(key, value, rebuild=...)``: after an eviction the key is built by ``rebuild``,
    not by the registry's entry (benchmarks hold full-size models under tiny names)."""
    from prompt_free import tiny
    from prompt_free.engine import BaseModel

    probe = tiny_engine()
    probe.base_model("Tiny SD")
    engine = tiny_engine(memory_budget=base_bytes(probe, "Tiny SD"))  # one base model at a time
    calls = []

    def rebuild():
        calls.append(1)
        return BaseModel("Tiny SD", engine.place(tiny.tiny_unet(99)), engine.place(tiny.tiny_vae(99)))

    engine.adopt(("base_models", "Tiny SD"), rebuild=rebuild)  # no value: built on first use
    assert engine.memory_report() == [] and not calls
    want = tiny.tiny_unet(99).conv_in.weight
    assert torch.equal(engine.base_model("Tiny SD").unet.conv_in.weight, want) and len(calls) == 1
    engine.base_model("Tiny SD (other seed)")  # evicts it
    assert [e["name"] for e in engine.memory_report()] == ["Tiny SD (other seed)"]
    assert torch.equal(engine.base_model("Tiny SD").unet.conv_in.weight, want) and len(calls) == 2
    assert engine.load_counts[("base_models", "Tiny SD")] == 2


def test_a_model_loaded_before_gets_its_room_before_it_is_built(monkeypatch):
    """Switching back to a base model under a budget that fits one: the other one leaves before
    the build starts, so (on the CPU, where a build fills memory) the two are never both held."""
    from prompt_free import loading

    probe = tiny_engine()
    probe.base_model("Tiny SD")
    probe.base_model("Tiny SD (other seed)")
    budget = max(base_bytes(probe, "Tiny SD"), base_bytes(probe, "Tiny SD (other seed)"))
    engine = tiny_engine(memory_budget=budget)
    engine.base_model("Tiny SD")
    engine.base_model("Tiny SD (other seed)")
    held_at_build = []
    build = loading.build_base_model

    def recording(eng, entry):
        held_at_build.append(eng.memory.used("device"))
        return build(eng, entry)

    monkeypatch.setattr(loading, "build_base_model", recording)
    engine.base_model("Tiny SD")
    assert held_at_build == [0]  # "Tiny SD (other seed)" left before the build
    assert [e["name"] for e in engine.memory_report()] == ["Tiny SD"]
