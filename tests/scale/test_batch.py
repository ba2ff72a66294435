"""``prompt-free generate --reference-dir DIR --ray``: a folder on a real local Ray cluster (Ray
Data, an actor pool of real engines on the tiny profile), against the one-process run.

One cluster for the module (2 CPUs), shut down at its end so that another module's cluster
does not meet this one. The actors run one torch thread each (their CPU share), the one-process
run this machine's count: pixels within 2/255 (docs/architecture.md, platform facts)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from prompt_free import metadata
from prompt_free.scale import cluster
from prompt_free.scale.batch import BatchError, plan_actors
from tests.helpers.app import EXAMPLES, ROOT
from tests.helpers.cli import pixels, run

pytestmark = pytest.mark.timeout(600)

ARGS = ["--profile", "tiny", "--steps", "2", "--size", "64x64", "--seed", "3", "--no-progress"]
NAMES = ["astronaut", "chelsea", "coffee", "rocket"]
# options that must travel to the actors: a ControlNet and its map, a setting, an image setting
OPTIONS = ["--control", f"canny={EXAMPLES / 'canny_house.png'}", "--reference-strength", "0.8",
           "--negative-image", EXAMPLES / "rocket.jpg", "--negative-strength", "0.5"]


@pytest.fixture(scope="module")
def ray_batch_cluster():
    ray = cluster.connect(num_cpus=2, what="tests/scale/test_batch.py")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference_folder(tmp_path_factory):
    refs = tmp_path_factory.mktemp("refs")
    for name in NAMES:
        shutil.copy(EXAMPLES / f"{name}.jpg", refs / f"{name}.jpg")
    return refs


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


@pytest.mark.slow
def test_two_actors_write_each_output_once_as_the_one_process_run_and_a_rerun_finishes_the_rest(
        ray_batch_cluster, reference_folder, tmp_path, capsys):
    folder = ["generate", "--reference-dir", reference_folder, *ARGS, *OPTIONS]
    code, out, err = run([*folder, "--out", tmp_path / "one"], capsys)
    assert code == 0, err
    here = _mtimes(tmp_path / "one")  # one rule for both: a run again here skips what is done too
    code, out, err = run([*folder, "--out", tmp_path / "one"], capsys)
    assert code == 0 and "wrote 0 file(s)" in out and _mtimes(tmp_path / "one") == here, err
    first = {n: pixels(tmp_path / "one" / n) for n in here}
    code, out, err = run([*folder, "--out", tmp_path / "one", "--overwrite"], capsys)
    assert code == 0 and "wrote 8 file(s)" in out, err
    assert all(t > here[n] for n, t in _mtimes(tmp_path / "one").items())
    assert all(np.array_equal(pixels(tmp_path / "one" / n), first[n]) for n in here)  # same process and threads

    code, out, err = run([*folder, "--out", tmp_path / "ray", "--ray", "--ray-actors", "2"], capsys)
    assert code == 0, err
    want = sorted(f"{n}-s3{kind}.png" for n in NAMES for kind in ("", "-map1"))
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == want
    assert "wrote 8 file(s)" in out  # eight writes for eight files: none written twice
    assert "ray: 4 reference(s) on 2 actor(s)" in err, err  # both actors served
    assert "Traceback" not in err
    for name in want:
        a, b = Image.open(tmp_path / "one" / name), Image.open(tmp_path / "ray" / name)
        diff = np.abs(pixels(tmp_path / "one" / name).astype(int) - pixels(tmp_path / "ray" / name).astype(int))
        assert diff.max() <= 2, name
        # the same record: inputs by path and hash as here, the same models, settings and seed
        assert a.info[metadata.JSON_CHUNK] == b.info[metadata.JSON_CHUNK], name
        assert a.info[metadata.PARAMETERS_CHUNK] == b.info[metadata.PARAMETERS_CHUNK], name
    rec = metadata.read(tmp_path / "ray" / "coffee-s3.png")
    assert rec["settings"]["negative_image"]["path"] == str(EXAMPLES / "rocket.jpg")
    assert rec["settings"]["reference_strength"] == 0.8 and rec["call"]["controls"][0]["controlnet"] == "canny"

    before = _mtimes(tmp_path / "ray")
    code, out, err = run([*folder, "--out", tmp_path / "ray", "--ray", "--ray-actors", "2"], capsys)
    assert code == 0, err
    assert "wrote 0 file(s)" in out and "4 of 4 reference(s) already done" in err
    assert _mtimes(tmp_path / "ray") == before

    # a batch stopped before its end: the run again does what is missing, and only that
    first = pixels(tmp_path / "ray" / "coffee-s3.png")
    (tmp_path / "ray" / "coffee-s3.png").unlink()
    code, out, err = run([*folder, "--out", tmp_path / "ray", "--ray", "--ray-actors", "1"], capsys)
    assert code == 0, err
    assert "wrote 2 file(s)" in out and "3 of 4 reference(s) already done" in err  # the picture and its map
    redone = {"coffee-s3.png", "coffee-s3-map1.png"}
    after = _mtimes(tmp_path / "ray")
    assert {k: v for k, v in after.items() if k not in redone} == {k: v for k, v in before.items() if k not in redone}
    assert np.array_equal(pixels(tmp_path / "ray" / "coffee-s3.png"), first)  # one thread per actor both times


def test_more_actors_than_the_cluster_holds_is_one_line(ray_batch_cluster, reference_folder, tmp_path, capsys):
    code, out, err = run(["generate", "--reference-dir", reference_folder, *ARGS, "--out", tmp_path / "D",
                          "--ray", "--ray-actors", "3"], capsys)
    assert code == 1
    assert err.strip().splitlines()[-1] == ("error: --ray-actors 3: the Ray cluster has 2 CPU(s), at least one per "
                                            "actor")
    assert list((tmp_path / "D").iterdir()) == []


def test_actors_that_cannot_start_stop_the_batch_with_one_line(ray_batch_cluster, reference_folder, tmp_path,
                                                                capsys, monkeypatch):
    """Another job holds the cluster's CPUs: no wait without end, one line, nothing written."""
    from prompt_free.scale import batch

    @ray_batch_cluster.remote(num_cpus=2)
    class Holder:
        def ready(self):
            return True

    holder = Holder.remote()
    try:
        assert ray_batch_cluster.get(holder.ready.remote(), timeout=120)
        monkeypatch.setattr(batch, "ACTORS_START_S", 3)
        code, out, err = run(["generate", "--reference-dir", reference_folder, *ARGS, "--out", tmp_path / "D",
                              "--ray", "--ray-actors", "2"], capsys)
    finally:
        ray_batch_cluster.kill(holder)
    assert code == 1
    assert err.strip().splitlines()[-1].startswith("error: the Ray batch stopped: Timed out while starting actors")
    assert "Traceback" not in err and list((tmp_path / "D").iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--reference", EXAMPLES / "coffee.jpg", "--ray"], "--ray runs a folder: give --reference-dir DIR"),
    (["--from-png", EXAMPLES / "coffee.jpg", "--ray"], "--ray runs a folder: give --reference-dir DIR"),
    (["--reference-dir", EXAMPLES, "--ray-actors", "2"], "--ray-address and --ray-actors go with --ray"),
    (["--reference-dir", EXAMPLES, "--ray-address", "auto"], "--ray-address and --ray-actors go with --ray"),
    (["--reference-dir", EXAMPLES, "--ray", "--ray-actors", "0"], "--ray-actors must be 1 or more, got 0"),
    (["--reference-dir", EXAMPLES, "--ray", "--device", "cuda:1"], "--device cuda:1: with --ray each actor gets"),
    (["--reference", EXAMPLES / "coffee.jpg", "--overwrite"], "--overwrite goes with --reference-dir"),
])
def test_ray_option_misuse_is_a_usage_error(argv, message, tmp_path, capsys):
    code, out, err = run(["generate", *argv, *ARGS, "--out", tmp_path / "D"], capsys)
    assert code == 2
    assert err.startswith(f"error: {message}") and len(err.strip().splitlines()) == 1, err


def test_ray_without_the_serve_extra_says_what_to_install(reference_folder, tmp_path):
    """A real process whose ``import ray`` fails as it does when Ray is not installed."""
    blocker = tmp_path / "blocker" / "ray"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ModuleNotFoundError("No module named \'ray\'", name="ray")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker.parent), str(ROOT)]), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "prompt_free", "generate", "--reference-dir", str(reference_folder),
                           *ARGS, "--out", str(tmp_path / "D"), "--ray"], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        'error: prompt-free generate --ray needs the serve extra (ray is not installed): pip install ".[serve]" '
        "(in the checkout)"]
    assert not (tmp_path / "D").exists()


@pytest.mark.parametrize("nodes, gpus, requested, device, want", [
    ([2], 0, None, None, (1, "cpu", 2, 0)),  # one engine per machine, all its CPUs
    ([2], 0, 2, None, (2, "cpu", 1, 0)),
    ([8, 32], 0, None, None, (2, "cpu", 16, 0)),  # the largest equal share with which both fit
    ([8, 32], 0, 5, "cpu", (5, "cpu", 8, 0)),
    ([16, 16], 4, None, None, (4, "cuda", None, 1)),  # one GPU each
    ([16, 16], 4, 2, "cuda", (2, "cuda", None, 1)),
    ([16, 16], 4, None, "cpu", (2, "cpu", 16, 0)),  # --device cpu on a GPU cluster
])
def test_actor_plan(nodes, gpus, requested, device, want):
    plan = plan_actors(nodes, gpus, requested, device)
    assert (plan.count, plan.device, plan.num_cpus, plan.num_gpus) == want


@pytest.mark.parametrize("nodes, gpus, requested, device, message", [
    ([2], 0, 3, None, "--ray-actors 3: the Ray cluster has 2 CPU(s), at least one per actor"),
    ([16], 0, None, "cuda", "--device cuda: the Ray cluster has no GPU"),
    ([16], 2, 3, None, "--ray-actors 3: the Ray cluster has 2 GPU(s), one per actor"),
])
def test_actor_plan_that_cannot_fit(nodes, gpus, requested, device, message):
    with pytest.raises(BatchError, match=re.escape(message)):
        plan_actors(nodes, gpus, requested, device)


@pytest.mark.parametrize("page", ["docs/scale-out.md", "docs/usage.md", "README.md"])
def test_the_docs_batch_commands_are_the_cli_s(page):
    """Every ``prompt-free generate ... --ray`` line of the pages' shell blocks parses."""
    from prompt_free.cli import build_parser

    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / page).read_text(), re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [shlex.split(line)[1:] for line in lines if line.startswith("prompt-free generate") and "--ray" in line]
    assert commands, page
    for argv in commands:
        args = build_parser().parse_args(argv)
        assert args.ray and args.reference_dir, argv
