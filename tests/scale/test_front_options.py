"""Issue 27: the app's tier options; without them the app is what it was and never imports Ray."""

from __future__ import annotations

import subprocess
import sys

import pytest

from prompt_free.app.main import parse_args
from prompt_free.app.tier_front import setup_of
from prompt_free.errors import InvalidSettingError
from tests.helpers.app import ROOT


def test_without_the_options_there_is_no_tier():
    assert setup_of(parse_args(["--profile", "tiny"])) is None


def test_the_options_shape_the_tier():
    setup = setup_of(parse_args(["--ray-replicas", "2", "--ray-max-replicas", "4", "--ray-target-ongoing", "1.5",
                                 "--ray-max-queued", "3", "--ray-cpus", "2", "--max-base-models", "3"]))
    o = setup.options
    assert (o.replicas, o.max_replicas, o.max_queued, o.cpus, o.max_base_models) == (2, 4, 3, 2.0, 3)
    assert o.capacity == 4 * 1 + 3
    deployment = o.deployment_options()
    assert deployment["autoscaling_config"] == {"min_replicas": 2, "max_replicas": 4, "target_ongoing_requests": 1.5}
    assert "num_replicas" not in deployment and deployment["max_queued_requests"] == 3
    import torch

    here = {"num_gpus": 1.0} if torch.cuda.is_available() else {}  # default: a GPU each where this machine has one
    assert deployment["ray_actor_options"] == {"num_cpus": 2.0, **here}
    on_gpus = setup_of(parse_args(["--ray-replicas", "2", "--ray-gpus", "1"])).options.deployment_options()
    assert on_gpus["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 1.0}
    fixed = setup_of(parse_args(["--ray-address", "auto"]))
    assert fixed.address == "auto" and fixed.options.deployment_options()["num_replicas"] == 1


@pytest.mark.parametrize("argv", [["--ray-replicas", "0"], ["--ray-replicas", "2", "--ray-max-replicas", "1"],
                                  ["--ray-replicas", "1", "--ray-max-ongoing", "0"], ["--ray-replicas", "1", "--ray-gpus", "-1"]])
def test_impossible_shapes_are_refused_with_the_option_named(argv):
    with pytest.raises(InvalidSettingError, match=argv[-2]):
        setup_of(parse_args(argv))


def test_the_app_without_the_options_builds_in_process_and_never_imports_ray():
    code = ("import sys; from app import create_app, parse_args; from prompt_free.app.tier_front import setup_of; "
            "a = parse_args(['--profile', 'tiny']); engine, demo = create_app(a.profile, tier=setup_of(a)); "
            "assert not hasattr(demo, 'tier'); "
            "print('ray' in sys.modules, any(m.startswith('ray.') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["False", "False"], out.stdout


def test_a_request_is_routed_by_the_base_model_it_resolves_to():
    from prompt_free.catalog import TaskRequest
    from prompt_free.engine import Engine
    from prompt_free.scale.client import routing_key
    from prompt_free.tasks import VariationSettings

    engine = Engine.from_profile("tiny", device="cpu")
    default = engine.registry.base_model_for(engine.defaults["seecoder"])
    assert default and routing_key(engine, TaskRequest("image_variation", VariationSettings())) == default
    named = VariationSettings(base_model=default)
    assert routing_key(engine, TaskRequest("image_variation", named)) == default
    assert not engine.load_counts  # the front end's engine reads its registry only


@pytest.mark.parametrize("page", ["docs/scale-out.md", "README.md"])
def test_the_docs_app_commands_shape_a_tier(page):
    """Every ``python app.py ... --ray-*`` line of the page's shell blocks parses and asks for a tier."""
    import re
    import shlex

    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / page).read_text(), re.S)
    lines = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    commands = [shlex.split(line)[2:] for line in (ln.removeprefix("exec ") for ln in lines)
                if line.startswith("python app.py") and "--ray" in line]
    if page == "docs/scale-out.md":
        assert len(commands) >= 3, commands
    for argv in commands:
        setup = setup_of(parse_args(argv))
        assert setup is not None, argv
