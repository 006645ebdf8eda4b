"""systemd units for the two daemons: render a packaged template, install it, start it.

The templates live beside the code (``agent/systemd/``, ``controller/systemd/``)
so a wheel carries them; ``{name}`` placeholders are filled with the paths of
the installation that installs the unit (its virtualenv's ``bin``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

UNIT_DIR = Path("/etc/systemd/system")


def bin_dir() -> Path:
    """The ``bin`` directory of the running installation (its virtualenv)."""
    return Path(sys.executable).parent


def render_unit(template: Path, **values: object) -> str:
    """The template with every ``{key}`` replaced; a placeholder left unfilled is a bug."""
    text = template.read_text()
    for key, value in values.items():
        text = text.replace("{" + key + "}", str(value))
    if "{" in text:
        raise ValueError(f"{template}: unfilled placeholder in {text[text.index('{'):][:40]!r}")
    return text


def systemd_is_init() -> bool:
    """True when systemd is PID 1 (the test of sd_booted())."""
    return os.path.isdir("/run/systemd/system")


def install_unit(name: str, text: str, dest_dir: Path = UNIT_DIR, start: bool = False) -> Path:
    """Write ``dest_dir/name`` (atomically) and, when systemd runs, reload and maybe start it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    path = dest_dir / name
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    tmp.rename(path)
    if dest_dir == UNIT_DIR and systemd_is_init() and shutil.which("systemctl"):
        subprocess.run(["systemctl", "daemon-reload"], check=True, timeout=60)
        subprocess.run(["systemctl", "enable", *(["--now"] if start else []), name],
                       check=True, timeout=120)
        if start:
            # a re-install picks up a new binary or configuration
            subprocess.run(["systemctl", "restart", name], check=True, timeout=120)
    return path
