"""README.md is a short front page whose statements are true: its defaults are the code's, its
tab table is the one list of tasks, its links lead somewhere, its library snippet runs."""

from __future__ import annotations

import re

from prompt_free import settings
from prompt_free.catalog import TASKS
from prompt_free.sampling import DEFAULT_SCHEDULER
from tests.helpers.app import ROOT

README = (ROOT / "README.md").read_text()
MAX_LINES = 150


def test_the_front_page_is_short():
    assert len(README.splitlines()) <= MAX_LINES


def test_its_defaults_are_the_code_s():
    said = re.search(r"Defaults are the paper's: (\w+), (\d+) steps, guidance ([\d.]+)\.", README)
    assert said, "the defaults sentence is gone"
    scheduler, steps, guidance = said.groups()
    assert scheduler == DEFAULT_SCHEDULER
    assert int(steps) == settings.STEPS.default
    assert float(guidance) == settings.GUIDANCE.default


def test_its_tab_table_is_the_list_of_tasks():
    rows = re.findall(r"^\| \*\*(.+?)\*\* \|", README, re.M)
    assert rows == [t.label for t in TASKS]


def test_every_link_leads_to_a_file():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).is_file(), target


def test_the_library_snippet_runs(tmp_path, monkeypatch):
    snippet = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    snippet = snippet.replace("VariationSettings(seed=20)", "VariationSettings(seed=20, steps=2, width=64, height=64)")
    monkeypatch.chdir(ROOT)
    namespace = {}
    exec(compile(snippet.replace('"variation.png"', repr(str(tmp_path / "variation.png"))), "README", "exec"), namespace)
    assert (tmp_path / "variation.png").is_file()


def test_the_usage_guide_s_sizes_and_exit_codes_are_the_code_s(tmp_path):
    usage = (ROOT / "docs" / "usage.md").read_text()
    size = settings.SIZE
    assert f"from {int(size.lo)} to {int(size.hi)} in the library and the CLI" in usage
    assert f"its API) stops at {int(size.slider_hi)}" in usage
    from prompt_free import cli

    # "exit code 2 for a usage error (... an input file that does not exist) and 1 for an input the run refuses"
    assert "exit code 2 for a usage error" in usage and "1 for an input the run refuses" in usage
    missing = cli.main(["generate", "--reference", str(tmp_path / "nope.png"), "--out", str(tmp_path), "--profile", "tiny"])
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    refused = cli.main(["generate", "--reference", str(tmp_path / "bad.png"), "--out", str(tmp_path), "--profile", "tiny",
                        "--steps", "2", "--size", "64x64"])
    assert (missing, refused) == (2, 1)


def test_the_use_with_diffusers_section_is_short_and_runs(tmp_path, monkeypatch):
    """The section's export command and snippet, run in a fresh folder on the tiny profile (64x64,
    2 steps instead of the snippet's 50 at the model's size: the rest as written)."""
    import shlex
    import shutil

    from prompt_free import cli
    from tests.helpers.app import EXAMPLES

    section = re.search(r"^## Use with diffusers\n(.*?)(?=^## )", README, re.S | re.M).group(0).rstrip()
    assert len(section.splitlines()) <= 10
    command = re.search(r"`(prompt-free export [^`]*)`", section).group(1)
    snippet = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "num_inference_steps=50" in snippet
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PFD_PROFILE", "tiny")
    assert cli.main(shlex.split(command)[1:]) == 0
    shutil.copy(EXAMPLES / "coffee.jpg", tmp_path / "reference.jpg")
    exec(compile(snippet.replace("num_inference_steps=50", "num_inference_steps=2, height=64, width=64"), "README", "exec"), {})
    from PIL import Image

    assert Image.open(tmp_path / "picture.png").size == (64, 64)
