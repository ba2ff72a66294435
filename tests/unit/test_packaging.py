"""The installable package: pins as in requirements.txt, the data it needs at run time, the
public API listed once with docstrings, the console script's entry point."""

from __future__ import annotations

import re
import tomllib

import pytest

from tests.helpers.app import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(name):
    lines = [line.split("#")[0].strip() for line in (ROOT / name).read_text().splitlines()]
    return sorted(line for line in lines if line and not line.startswith("-r"))


def _norm(reqs):
    return sorted(re.sub(r"\s+", "", r).lower().replace("_", "-") for r in reqs)


def test_package_pins_are_requirements_txt():
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    assert _norm(project["dependencies"] + extras["app"]) == _norm(_requirements("requirements.txt"))
    dev_own = [r for r in extras["dev"] if not r.startswith("prompt-free-diffusion")]
    assert _norm(dev_own) == _norm(_requirements("requirements-dev.txt"))
    assert "prompt-free-diffusion[app,train]" in extras["dev"]
    assert set(_norm(extras["serve"])) <= set(_norm(dev_own))  # the tests run the Ray tier (issue 27)
    assert not any(r.lower().startswith("gradio") for r in project["dependencies"])  # the library runs without the app


def test_console_script_and_module_entry_point():
    from prompt_free import cli

    assert PYPROJECT["project"]["scripts"] == {"prompt-free": "prompt_free.cli:main"}
    assert (ROOT / "prompt_free" / "__main__.py").read_text().count("from .cli import main") == 1
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0


def test_runtime_data_is_package_data():
    """checkpoints.yaml and the training configs are reached through prompt_free/ (links in a
    checkout, copies in the wheel), and the package data globs name them."""
    from prompt_free.registry import DEFAULT_CHECKPOINTS
    from prompt_free.train.config import BUNDLED_CONFIGS, load_config

    assert DEFAULT_CHECKPOINTS == (ROOT / "checkpoints.yaml").resolve()
    assert (ROOT / "prompt_free" / "checkpoints.yaml").resolve() == DEFAULT_CHECKPOINTS
    assert BUNDLED_CONFIGS.resolve() == (ROOT / "configs").resolve()
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["prompt_free"]
    assert "checkpoints.yaml" in data and "configs/*.yaml" in data
    assert load_config("train_tiny.yaml").base_model == "tiny"  # a bundled config by name


def test_public_api_is_listed_once_and_documented():
    import prompt_free

    for name in prompt_free.__all__:
        if name == "__version__":
            continue
        obj = getattr(prompt_free, name)
        assert (obj.__doc__ or "").strip(), f"prompt_free.{name} has no docstring"
        assert name.split("_")[0] in prompt_free.__doc__ or name in prompt_free.__doc__, name
    assert prompt_free.Engine.from_profile and prompt_free.image_variation and prompt_free.VariationSettings
    with pytest.raises(AttributeError):
        prompt_free.not_a_name
