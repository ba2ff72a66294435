"""docs/settings.md is the page scripts/settings_table.py generates from the code."""

from __future__ import annotations

import importlib.util

from tests.helpers.app import ROOT


def _script():
    spec = importlib.util.spec_from_file_location("settings_table", ROOT / "scripts" / "settings_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_settings_page_matches_the_code():
    table = _script()
    page = (ROOT / "docs" / "settings.md").read_text()
    assert table.updated_page(page) == page, "docs/settings.md is out of date: run python scripts/settings_table.py"


def test_every_environment_variable_and_option_is_in_the_section():
    table = _script()
    text = table.section()
    for var in ("PFD_PROFILE", "PFD_MEMORY_BUDGET", "PFD_MAX_WORK", "HF_HUB_OFFLINE", "SPACES_ZERO_GPU", "WORLD_SIZE"):
        assert f"| `{var}` |" in text
    for option in ("`--memory-budget MEMORY_BUDGET`", "`--from-png PNG`", "`--reference-dir DIR`", "`--check`",
                   "`--max-steps MAX_STEPS`", "`--mask MASK`",
                   "`--photo IMG`", "`--lora NAME[=SCALE]`", "`--blend average\\|concatenate\\|regions`"):
        assert option in text
    assert "| `settings.STEPS` | steps | 1 .. 150 | 50 |" in text
