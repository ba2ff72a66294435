"""Upload limit, cache cleanup, analytics and login settings (prompt_free.settings, app.py)."""

from __future__ import annotations

import pytest

from prompt_free import settings
from prompt_free.errors import InvalidSettingError


def test_upload_limit_default_and_environment(monkeypatch):
    monkeypatch.delenv("PFD_MAX_UPLOAD_MB", raising=False)
    assert settings.max_upload_size() == 25 * 1024 * 1024
    monkeypatch.setenv("PFD_MAX_UPLOAD_MB", "2.5")
    assert settings.max_upload_size() == int(2.5 * 1024 * 1024)
    for bad in ("0", "-1", "lots", "inf"):
        monkeypatch.setenv("PFD_MAX_UPLOAD_MB", bad)
        with pytest.raises(InvalidSettingError, match="PFD_MAX_UPLOAD_MB"):
            settings.max_upload_size()


def test_cache_cleanup_default_and_environment(monkeypatch):
    monkeypatch.delenv("PFD_CACHE_MAX_AGE", raising=False)
    assert settings.delete_cache() == (600, 3600)
    monkeypatch.setenv("PFD_CACHE_MAX_AGE", "120")
    assert settings.delete_cache() == (120, 120)
    monkeypatch.setenv("PFD_CACHE_MAX_AGE", "0")
    assert settings.delete_cache() is None
    monkeypatch.setenv("PFD_CACHE_MAX_AGE", "-5")
    with pytest.raises(InvalidSettingError, match="PFD_CACHE_MAX_AGE"):
        settings.delete_cache()


def test_analytics_off_unless_asked(monkeypatch):
    monkeypatch.delenv("GRADIO_ANALYTICS_ENABLED", raising=False)
    assert settings.analytics_enabled() is False
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "True")
    assert settings.analytics_enabled() is True


def test_app_module_turns_analytics_off_before_gradio(monkeypatch):
    import subprocess
    import sys

    from tests.helpers.app import ROOT

    code = "import os, app; print(os.environ['GRADIO_ANALYTICS_ENABLED'])"
    env = {k: v for k, v in __import__("os").environ.items() if k != "GRADIO_ANALYTICS_ENABLED"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    env["GRADIO_ANALYTICS_ENABLED"] = "True"  # the user's choice is kept
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_auth_and_share_warning(monkeypatch):
    from app import launch_options, parse_args, share_warning

    assert settings.parse_auth("ann:secret:x") == ("ann", "secret:x")
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(InvalidSettingError, match="user:password"):
            settings.parse_auth(bad)
    monkeypatch.delenv("PFD_AUTH", raising=False)
    assert parse_args([]).auth is None and launch_options()["auth"] is None
    monkeypatch.setenv("PFD_AUTH", "bob:pw")
    assert launch_options(parse_args([]).auth) == {"max_file_size": settings.max_upload_size(), "auth": ("bob", "pw")}
    assert "--share without --auth" in share_warning(True, None)
    assert share_warning(True, ("bob", "pw")) is None and share_warning(False, None) is None


@pytest.mark.parametrize("name, value, message", [
    ("PFD_MAX_WORK", "abc", "PFD_MAX_WORK must be a positive number"),
    ("PFD_MAX_UPLOAD_MB", "-3", "PFD_MAX_UPLOAD_MB must be a positive number of MB"),
    ("PFD_MAX_SESSION_REQUESTS", "0", "PFD_MAX_SESSION_REQUESTS must be at least 1"),
    ("PFD_CACHE_MAX_AGE", "-1", "PFD_CACHE_MAX_AGE must be 0 or more seconds"),
    ("PFD_AUTH", "nocolon", "must be user:password"),
])
def test_a_malformed_environment_variable_stops_the_app_at_start(monkeypatch, capsys, name, value, message):
    from app import main

    monkeypatch.setenv(name, value)
    assert main(["--profile", "tiny"]) == 2
    assert message in capsys.readouterr().err
