"""Issue 13: a cancelled request stops at the next denoising step and frees the device; the
work limit refuses an over-large request before any model loads."""

from __future__ import annotations

import time

import pytest
import torch
from PIL import Image, ImageDraw

from prompt_free import cancel, settings
from prompt_free.engine import Engine
from prompt_free.errors import Cancelled, PromptFreeError, TimeLimitError, WorkLimitError
from prompt_free.tasks import (
    CompareSettings,
    ControlSettings,
    ControlSpec,
    EditSettings,
    TryOnSettings,
    VariationSettings,
    compare,
    edit_with_reference,
    image_variation,
    reference_control,
    virtual_tryon,
)
from tests.helpers.app import EXAMPLES

pytestmark = pytest.mark.timeout(600)
REF = EXAMPLES / "chelsea.jpg"


@pytest.fixture(scope="module")
def engine():
    return Engine.from_profile("tiny", device="cpu")


# ----------------------------------------------------------------------------- the token
def test_the_token_stops_generate_at_the_next_step_and_frees_the_run_lock(engine):
    token, seen = cancel.CancelToken(), []

    def progress(i, n):
        seen.append(i)
        if i == 2:
            token.cancel()

    with cancel.cancellable(token), pytest.raises(Cancelled):
        image_variation(engine, REF, VariationSettings(width=64, height=64, steps=20), progress=progress)
    assert seen == [1, 2]  # step 3 never ran
    assert isinstance(Cancelled("x"), PromptFreeError)
    assert engine._run_lock.acquire(blocking=False)  # released on the way out
    engine._run_lock.release()
    assert cancel.current() is None
    # the next request runs as usual, with the same pictures as one never preceded by a cancel
    a = image_variation(engine, REF, VariationSettings(width=64, height=64, steps=2))
    with cancel.cancellable(cancel.CancelToken()):  # a live token changes nothing
        b = image_variation(engine, REF, VariationSettings(width=64, height=64, steps=2))
    assert a.images[0].tobytes() == b.images[0].tobytes()


# ----------------------------------------------------------------------------- the work limit
def _person_and_mask():
    person = Image.open(EXAMPLES / "tryon_person.png").convert("RGB").resize((150, 230))
    mask = Image.new("L", person.size, 0)
    ImageDraw.Draw(mask).rectangle((40, 70, 110, 140), fill=255)
    return person, mask


@pytest.mark.parametrize("task", ["variation", "control", "compare", "tryon", "edit"])
def test_a_request_over_the_work_limit_is_refused_before_any_model_loads(monkeypatch, task):
    monkeypatch.setenv("PFD_MAX_WORK", "2")
    fresh = Engine.from_profile("tiny", device="cpu")
    with pytest.raises(WorkLimitError, match=r"the limit is 2 \(PFD_MAX_WORK\).*Lower the size") as e:
        if task == "variation":
            image_variation(fresh, REF, VariationSettings(width=512, height=512, steps=10))  # 2.6
        elif task == "control":
            reference_control(fresh, REF, [ControlSpec("canny", EXAMPLES / "coffee.jpg", "preprocess")],
                              ControlSettings(width=256, height=256, steps=20))  # 0.066 x 20 x 2 = 2.6
        elif task == "compare":
            compare(fresh, REF, EXAMPLES / "pose_standing.png", "openpose", mode="use as-is",
                    settings=CompareSettings(width=256, height=256, steps=12, methods=["prompt_free", "dual_controlnet"]))
        elif task == "tryon":
            person, mask = _person_and_mask()
            virtual_tryon(fresh, person, EXAMPLES / "tryon_garment_shirt.png", mask,
                          TryOnSettings(steps=150, pose_control=False))  # 150x230 x 150 = 5.2
        else:
            person, mask = _person_and_mask()
            edit_with_reference(fresh, person, mask, REF, EditSettings(steps=150))  # generated at 320x512: 24.6
    assert "megapixel-steps" in str(e.value)
    assert not fresh.load_counts  # refused before any model loaded


def test_the_limit_is_stricter_for_the_public(monkeypatch):
    for name in ("PFD_MAX_WORK", "SPACE_ID", "PFD_PUBLIC"):
        monkeypatch.delenv(name, raising=False)
    assert settings.max_work() == settings.MAX_WORK_LOCAL
    monkeypatch.setenv("SPACE_ID", "someone/prompt-free")
    assert settings.max_work() == settings.MAX_WORK_PUBLIC < settings.MAX_WORK_LOCAL
    monkeypatch.delenv("SPACE_ID")
    monkeypatch.setenv("PFD_PUBLIC", "1")
    assert settings.max_work() == settings.MAX_WORK_PUBLIC
    monkeypatch.setenv("PFD_MAX_WORK", "50")
    assert settings.max_work() == 50
    monkeypatch.setenv("PFD_MAX_WORK", "lots")
    with pytest.raises(PromptFreeError, match="PFD_MAX_WORK"):
        settings.max_work()
    # a default request of every tab fits the public limit (512x512, 50 steps, 1 image, 2 ControlNets: 39)
    from app import parse_args

    assert parse_args(["--public"]).public


# ----------------------------------------------------------------------------- through the app
def _variation_args(steps, size=64, seed=1, n=1):
    from gradio_client import handle_file

    return [handle_file(str(REF)), "SeeCoder", "Tiny SD", 2.0, steps, size, size, seed, False, n, "DDIM"]


def test_in_the_app_a_cancelled_job_frees_the_device_for_the_next_request():
    from gradio_client import Client

    from tests.helpers.app import running_app

    with running_app("tiny") as (engine, demo, url):
        client = Client(url, verbose=False)
        client.predict(*_variation_args(2), api_name="/image_variation")  # warm: models loaded
        t0 = time.perf_counter()
        client.predict(*_variation_args(2, seed=2), api_name="/image_variation")
        alone = time.perf_counter() - t0

        long_job = Client(url, verbose=False).submit(*_variation_args(150, size=256, n=4), api_name="/image_variation")
        time.sleep(2.0)
        assert not long_job.done(), "the long job finished before it could be cancelled; make it longer"
        long_job.cancel()
        t0 = time.perf_counter()
        gallery, info, seed = client.predict(*_variation_args(2, seed=3), api_name="/image_variation")
        after_cancel = time.perf_counter() - t0
        assert len(gallery) == 1
        # the long job (150 steps x 4 images at 256) would take far longer than this
        assert after_cancel < 3 * alone + 5.0, (alone, after_cancel)
        assert engine._run_lock.acquire(timeout=5)
        engine._run_lock.release()


def test_in_the_app_an_over_long_preparation_is_a_clear_message(app, monkeypatch):
    from gradio_client import Client

    client = Client(app[2], verbose=False)
    monkeypatch.setenv("PFD_PREPARE_LIMIT", "0.000001")
    with pytest.raises(Exception, match=r"took longer than 1e-06 s, this server's limit \(PFD_PREPARE_LIMIT\)"):
        client.predict(*_variation_args(2), api_name="/image_variation")
    monkeypatch.setenv("PFD_PREPARE_LIMIT", "0")  # no limit
    gallery, info, seed = client.predict(*_variation_args(2), api_name="/image_variation")
    assert len(gallery) == 1
    monkeypatch.setenv("PFD_PREPARE_LIMIT", "soon")
    with pytest.raises(PromptFreeError, match="PFD_PREPARE_LIMIT must be a number of seconds"):
        settings.prepare_limit()


def test_in_the_app_stop_frees_a_request_stuck_before_sampling_within_a_second(tmp_path):
    """Four large references: reading and encoding them (SeeCoder at 1536 px) takes seconds before
    the first step. Stop ends the request's worker within a second (it used to run on to the
    first step)."""
    import threading

    import numpy as np
    from gradio_client import Client, handle_file

    from tests.helpers.app import endpoint_calls, running_app

    y, x = np.mgrid[0:4000, 0:6000]
    big = tmp_path / "big.jpg"
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(big, quality=90)
    args = list(endpoint_calls()["/multi_reference"])
    args[:4] = [handle_file(str(big))] * 4

    def workers():
        return [t for t in threading.enumerate() if t.name == "pfd-request"]

    with running_app("tiny") as (engine, demo, url):
        client = Client(url, verbose=False)
        client.predict(*endpoint_calls()["/multi_reference"], api_name="/multi_reference")  # warm: models loaded
        job = client.submit(*args, api_name="/multi_reference")
        deadline = time.monotonic() + 60
        while not workers() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # reading and encoding the references
        assert workers() and not job.done(), "the request finished before it could be stopped; make it longer"
        job.cancel()
        t0 = time.perf_counter()
        while workers() and time.perf_counter() - t0 < 30:
            time.sleep(0.02)
        freed = time.perf_counter() - t0
        assert freed < 1.0, f"the worker ran on for {freed:.2f} s after Stop"


@pytest.mark.browser
def test_browser_stop_ends_a_running_generation_at_its_next_step():
    from tests.helpers.app import chromium_page, running_app

    def busy(engine):
        free = engine._run_lock.acquire(blocking=False)
        if free:
            engine._run_lock.release()
        return not free

    with running_app("tiny") as (engine, demo, url), chromium_page(url) as page:
        page.locator("#variation-reference input[type=file]").set_input_files(str(REF))
        page.wait_for_selector("#variation-reference img", timeout=30_000)
        for label, value in (("Steps", "150"), ("Images", "8")):
            box = page.locator(f"input[aria-label='number input for {label}']").first
            box.fill(value)
            box.press("Enter")
        assert page.locator("#variation-stop").is_visible()
        page.locator("#variation-run").click()
        deadline = time.time() + 120
        while not busy(engine) and time.time() < deadline:  # first run: models load
            time.sleep(0.1)
        assert busy(engine), "the generation never started"
        time.sleep(1.0)
        page.locator("#variation-stop").click()
        deadline = time.time() + 15
        while busy(engine) and time.time() < deadline:
            time.sleep(0.1)
        assert not busy(engine), "Stop did not end the running generation"
        assert page.locator("#variation-gallery img").count() == 0


def test_a_full_queue_answers_busy_try_again(monkeypatch):
    from gradio_client import Client

    from tests.helpers.app import running_app

    monkeypatch.setattr(settings, "QUEUE_SIZE", 1)
    monkeypatch.setattr(settings, "CONCURRENT_REQUESTS", 1)
    with running_app("tiny") as (engine, demo, url):
        running = Client(url, verbose=False).submit(*_variation_args(150, size=256, n=4), api_name="/image_variation")
        deadline = time.time() + 60
        while demo._queue.active_jobs.count(None) == len(demo._queue.active_jobs) and time.time() < deadline:
            time.sleep(0.1)  # until the first job runs
        waiting = Client(url, verbose=False).submit(*_variation_args(150, size=256, n=4), api_name="/image_variation")
        time.sleep(1.0)
        try:
            with pytest.raises(Exception, match="(?i)queue is full.*try again"):
                Client(url, verbose=False).predict(*_variation_args(2), api_name="/image_variation")
        finally:
            waiting.cancel()
            running.cancel()


def test_a_session_may_have_at_most_its_limit_waiting_or_running(monkeypatch):
    """prompt_free.app.session_limit: one Client (one session) sends 5 jobs while a long job of another
    runs; with one request running at a time they all wait in the queue, and the 4th and 5th
    are refused at submission with the message; a third Client is still served."""
    from gradio_client import Client

    from tests.helpers.app import running_app

    monkeypatch.setattr(settings, "CONCURRENT_REQUESTS", 1)  # queued jobs, not running ones
    monkeypatch.delenv("PFD_MAX_SESSION_REQUESTS", raising=False)  # the default, 3
    with running_app("tiny") as (engine, demo, url):
        long_job = Client(url, verbose=False).submit(*_variation_args(150, size=256, n=4), api_name="/image_variation")
        deadline = time.time() + 60
        while demo._queue.active_jobs.count(None) == len(demo._queue.active_jobs) and time.time() < deadline:
            time.sleep(0.1)  # until the long job runs
        busy = Client(url, verbose=False)
        jobs = [busy.submit(*_variation_args(1, seed=s), api_name="/image_variation") for s in range(5)]
        other = None
        try:
            deadline = time.time() + 30
            while sum(j.done() for j in jobs) < 2 and time.time() < deadline:
                time.sleep(0.1)
            refused = [j for j in jobs if j.done()]
            assert len(refused) == 2, [j.status() for j in jobs]
            for job in refused:
                with pytest.raises(Exception) as err:
                    job.result()
                assert "You already have 3 requests waiting or running" in str(err.value)
                assert "press Stop" in str(err.value)
            assert not long_job.done()
            other = Client(url, verbose=False).submit(*_variation_args(1, seed=9), api_name="/image_variation")
            time.sleep(1.0)
            assert not other.done()  # accepted: it waits in the queue, it was not refused
        finally:
            long_job.cancel()
        gallery, _, seed = other.result(timeout=120)
        assert len(gallery) == 1 and seed == 9
        served = [j.result(timeout=120) for j in jobs if j not in refused]
        assert len(served) == 3 and all(len(g) == 1 for g, _, _ in served)
        # once they are done the session may send again
        assert len(busy.predict(*_variation_args(1, seed=7), api_name="/image_variation")[0]) == 1


@pytest.mark.browser
def test_browser_a_session_over_its_limit_is_told_why(monkeypatch):
    """In the browser (one page = one session, limit 1): while the Image Variation tab's long
    generation runs, Generate in the Reference + ControlNet tab is refused with the message."""
    from tests.helpers.app import chromium_page, running_app

    monkeypatch.setenv("PFD_MAX_SESSION_REQUESTS", "1")
    with running_app("tiny") as (engine, demo, url), chromium_page(url) as page:
        page.locator("#variation-reference input[type=file]").set_input_files(str(REF))
        page.wait_for_selector("#variation-reference img", timeout=30_000)
        for label, value in (("Steps", "150"), ("Images", "8")):
            box = page.locator(f"input[aria-label='number input for {label}']").first
            box.fill(value)
            box.press("Enter")
        page.locator("#variation-run").click()
        deadline = time.time() + 60
        while not demo._queue.event_ids_to_events and time.time() < deadline:
            time.sleep(0.1)
        assert demo._queue.event_ids_to_events, "the generation was never submitted"
        page.get_by_role("tab", name="Reference + ControlNet").click()
        page.locator("#control-run").click()
        message = page.get_by_text("You already have 1 request waiting or running").first
        message.wait_for(state="visible", timeout=30_000)
        jobs = [e.fn.api_name for e in list(demo._queue.event_ids_to_events.values())]
        assert "image_variation" in jobs and "reference_control" not in jobs  # refused, never queued
        page.get_by_role("tab", name="Image Variation").click()
        page.locator("#variation-stop").click()  # the long run ends before the server does
        deadline = time.time() + 30
        while demo._queue.event_ids_to_events and time.time() < deadline:
            time.sleep(0.1)
        assert engine._run_lock.acquire(timeout=15)
        engine._run_lock.release()


# ----------------------------------------------------------------------------- work around the steps
def test_the_time_limit_applies_before_the_steps_and_not_to_model_loading():
    token = cancel.CancelToken(0.2)
    token.check()
    with token.paused():
        time.sleep(0.3)  # loading a model: not counted
        token.check()
    token.check()
    time.sleep(0.3)
    with pytest.raises(TimeLimitError, match=r"took longer than 0.2 s.*PFD_PREPARE_LIMIT"):
        token.check()
    token.steps_started()
    token.check()  # the steps have no time limit
    token.cancel()
    with pytest.raises(Cancelled):
        token.check()
    assert cancel.CancelToken().limit_s is None


def test_a_request_cancelled_before_its_steps_stops_at_the_first_boundary_and_loads_nothing():
    fresh = Engine.from_profile("tiny", device="cpu")
    token = cancel.CancelToken()
    token.cancel()
    with cancel.cancellable(token), pytest.raises(Cancelled):
        image_variation(fresh, REF, VariationSettings(width=64, height=64, steps=2))
    assert not fresh.load_counts  # stopped at the image read, before any model


def test_an_over_long_preparation_ends_with_a_message_and_the_steps_are_not_limited(tmp_path):
    fresh = Engine.from_profile("tiny", device="cpu")
    with cancel.cancellable(cancel.CancelToken(1e-9)), pytest.raises(TimeLimitError, match="PFD_PREPARE_LIMIT"):
        image_variation(fresh, REF, VariationSettings(width=64, height=64, steps=2))
    assert not fresh.load_counts
    # a limit the preparation keeps; loading the models and the steps (slowed here) take longer
    seen = []

    def slow_step(i, n):
        time.sleep(1.0)
        seen.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    with cancel.cancellable(cancel.CancelToken(8.0)):
        r = image_variation(fresh, REF, VariationSettings(width=64, height=64, steps=9), progress=slow_step)
    assert len(seen) == 9 and seen[-1] > 8.0 and r.images


def test_stop_reaches_inside_a_seecoder_encode_and_a_vae_decode(engine):
    token, reached = cancel.CancelToken(), []
    sc = engine.seecoder("SeeCoder").model
    cancel.reachable(sc)

    def stop_in_the_middle(module, args):
        reached.append(type(module).__name__)
        token.cancel()

    layer = next(m for m in sc.modules() if isinstance(m, torch.nn.ModuleList))[0]
    handle = layer.register_forward_pre_hook(stop_in_the_middle)
    try:
        with cancel.cancellable(token), pytest.raises(Cancelled):
            engine.encode_reference(Image.new("RGB", (96, 96), (200, 100, 50)), "SeeCoder")
    finally:
        handle.remove()
    assert reached  # the encode was under way when it stopped
    assert sum(1 for m in sc.modules() if m._forward_pre_hooks) > 3  # every layer list's layers check
    # without a token the hooks change nothing: the pinned pictures (tests/pins) hold


def test_a_listener_hears_the_cancel_once_and_a_removed_one_never():
    token, heard = cancel.CancelToken(), []
    remove_first = token.on_cancel(lambda: heard.append("first"))
    remove_second = token.on_cancel(lambda: heard.append("second"))
    remove_second()  # the work it watched ended first
    token.cancel()
    token.cancel()
    assert heard == ["first"]
    remove_first()  # after the cancel: a no-op
    token.on_cancel(lambda: heard.append("late"))  # a token already cancelled calls at once
    assert heard == ["first", "late"]
