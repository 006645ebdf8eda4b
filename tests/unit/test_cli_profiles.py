"""Profiles: the config file the CLI writes and reads (no controller needed)."""

from __future__ import annotations

import stat
import tomllib

import pytest

from controller.cli.client import api_base_url
from controller.cli.errors import CliError
from controller.cli.profiles import Profile, dump_toml, load_profile, save_profile


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    for var in ("MINIECS_ENDPOINT", "MINIECS_TOKEN", "MINIECS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MINIECS_CONFIG", str(tmp_path / "deep" / "dir" / "config.toml"))
    return tmp_path / "deep" / "dir" / "config.toml"


def test_awkward_values_survive_a_round_trip(clean_env):
    token = 'a"b\\c\nd\u00e9'
    path = save_profile(Profile("we ird.name", "https://ctl.example:8443", token, "/ca.pem"))
    assert path == clean_env
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    got = load_profile("we ird.name")
    assert got == Profile("we ird.name", "https://ctl.example:8443", token, "/ca.pem")


def test_other_content_of_the_file_is_kept(clean_env):
    clean_env.parent.mkdir(parents=True)
    clean_env.write_text('color = false\n[profiles.lab]\nendpoint = "http://a"\ntoken = "t"\n')
    save_profile(Profile("default", "http://b", "u"))
    data = tomllib.loads(clean_env.read_text())
    assert data == {"color": False, "profiles": {"lab": {"endpoint": "http://a", "token": "t"},
                                                 "default": {"endpoint": "http://b",
                                                             "token": "u"}}}


def test_profile_selection_and_env_overrides(clean_env, monkeypatch):
    save_profile(Profile("default", "http://one", "t1"))
    save_profile(Profile("lab", "http://two", "t2"))
    assert load_profile().endpoint == "http://one"
    monkeypatch.setenv("MINIECS_PROFILE", "lab")
    assert load_profile() == Profile("lab", "http://two", "t2")
    monkeypatch.setenv("MINIECS_TOKEN", "env-token")
    assert load_profile("default") == Profile("default", "http://one", "env-token")


def test_missing_profile_and_broken_file(clean_env, monkeypatch):
    with pytest.raises(CliError, match="no profile 'default'.*miniecs configure"):
        load_profile()
    monkeypatch.setenv("MINIECS_ENDPOINT", "http://env")
    monkeypatch.setenv("MINIECS_TOKEN", "tok")
    assert load_profile() == Profile("default", "http://env", "tok")  # env alone is enough
    clean_env.parent.mkdir(parents=True)
    clean_env.write_text("[profiles.default\n")
    with pytest.raises(CliError, match="cannot parse"):
        load_profile()


def test_dump_toml_nested_tables():
    text = dump_toml({"profiles": {"a": {"x": "1", "n": 2, "on": True}}})
    assert tomllib.loads(text) == {"profiles": {"a": {"x": "1", "n": 2, "on": True}}}
    assert "[profiles.a]" in text


@pytest.mark.parametrize("endpoint,base", [
    ("http://h:8080", "http://h:8080/api/v1"),
    ("http://h:8080/", "http://h:8080/api/v1"),
    ("http://h:8080/api/v1", "http://h:8080/api/v1"),
    ("https://h/prefix/", "https://h/prefix/api/v1"),
])
def test_api_base_url(endpoint, base):
    assert api_base_url(endpoint) == base
