"""Connection profiles in ``~/.config/miniecs/config.toml``.

::

    [profiles.default]
    endpoint = "http://127.0.0.1:8080"
    token = "mecs_..."
    ca_file = "/etc/miniecs/ca.pem"   # optional, for https endpoints
    project = "acme"                  # optional: an admin acting in one project

``token`` is an admin token (``mecs_...``) or an API key (``mecsk_...``): both
are sent as ``Authorization: Bearer``. ``project`` (or ``MINIECS_PROJECT``) is
sent as ``X-Miniecs-Project``.

``MINIECS_CONFIG`` moves the file; ``MINIECS_ENDPOINT`` and ``MINIECS_TOKEN``
override the chosen profile's values (handy in scripts and CI).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from controller.cli.errors import CliError

DEFAULT_PROFILE = "default"
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def config_path() -> Path:
    """Where profiles live: ``$MINIECS_CONFIG`` or ``~/.config/miniecs/config.toml``."""
    explicit = os.environ.get("MINIECS_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "miniecs" / "config.toml"


@dataclass(frozen=True)
class Profile:
    """Where the controller is and how to prove who we are."""

    name: str
    endpoint: str | None
    token: str | None
    ca_file: str | None = None
    project: str | None = None


def read_config(path: Path) -> dict:
    """The parsed config file; an empty one when it does not exist."""
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"cannot parse {path}: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None


def load_profile(name: str | None = None) -> Profile:
    """The named profile (``$MINIECS_PROFILE`` or ``default``), with env overrides applied."""
    name = name or os.environ.get("MINIECS_PROFILE") or DEFAULT_PROFILE
    path = config_path()
    profiles = read_config(path).get("profiles", {})
    values = profiles.get(name)
    endpoint = os.environ.get("MINIECS_ENDPOINT")
    token = os.environ.get("MINIECS_TOKEN")
    if values is None and not (endpoint and token):
        hint = f"run `miniecs configure --endpoint URL --token TOKEN --profile {name}`"
        if profiles:
            hint = f"known profiles: {', '.join(sorted(profiles))}; or {hint}"
        raise CliError(f"no profile {name!r} in {path}; {hint}")
    values = values or {}
    return Profile(name=name, endpoint=endpoint or values.get("endpoint"),
                   token=token or values.get("token"), ca_file=values.get("ca_file"),
                   project=os.environ.get("MINIECS_PROJECT") or values.get("project"))


def save_profile(profile: Profile) -> Path:
    """Write ``profile`` into the config file (mode 0600), keeping the other profiles."""
    path = config_path()
    data = read_config(path)
    entry = {"endpoint": profile.endpoint, "token": profile.token}
    if profile.ca_file:
        entry["ca_file"] = profile.ca_file
    if profile.project:
        entry["project"] = profile.project
    data.setdefault("profiles", {})[profile.name] = entry
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Write beside the target and rename, so a crash never leaves half a file,
    # and create it 0600 so the token is never readable by others, even briefly.
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dump_toml(data))
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def dump_toml(data: dict) -> str:
    """TOML for nested tables of scalars (all this file ever holds)."""
    lines: list[str] = []
    _dump_table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _dump_table(table: dict, prefix: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if prefix and (scalars or not tables):
        lines.append("")
        lines.append("[" + ".".join(_key(k) for k in prefix) + "]")
    for key, value in scalars.items():
        if value is not None:
            lines.append(f"{_key(key)} = {_value(value)}")
    for key, sub in tables.items():
        _dump_table(sub, [*prefix, key], lines)


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    # JSON's string escapes (quote, backslash, newline, \u plus four hex digits) are all
    # valid TOML basic-string escapes.
    return json.dumps(str(value), ensure_ascii=False)
