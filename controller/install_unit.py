"""``miniecs-controller install-unit``: a system user, an environment file and the unit."""

from __future__ import annotations

import pwd
import subprocess
from pathlib import Path

from agent.units import UNIT_DIR, bin_dir, install_unit, render_unit

UNIT_NAME = "miniecs-controller.service"
TEMPLATE = Path(__file__).with_name("systemd") / UNIT_NAME
ENV_FILE = Path("/etc/miniecs/controller.env")
STATE_DIR = Path("/var/lib/miniecs-controller")

DEFAULT_ENV = """\
# miniecs-controller settings (MINIECS_*; see docs/operations.md). Read by the systemd unit.
MINIECS_LISTEN={listen}
# MINIECS_DATABASE_URL=postgresql+psycopg://miniecs@/miniecs
# MINIECS_EIP_POOL=203.0.113.128/26
"""


def render(user: str, env_file: Path = ENV_FILE, bin_path: Path | None = None) -> str:
    return render_unit(TEMPLATE, bin_dir=bin_path or bin_dir(), user=user, env_file=env_file)


def ensure_system_user(user: str) -> bool:
    """Create the system user (and group) the controller runs as; True when created."""
    try:
        pwd.getpwnam(user)
        return False
    except KeyError:
        pass
    subprocess.run(["useradd", "--system", "--user-group", "--home-dir", str(STATE_DIR),
                    "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                   check=True, timeout=60)
    return True


def install(user: str, listen: str, dest: Path = UNIT_DIR, start: bool = False) -> list[str]:
    """Install everything the unit needs; returns what was done, one line each."""
    done = []
    system = dest == UNIT_DIR
    if system:
        if ensure_system_user(user):
            done.append(f"created system user {user}")
        if not ENV_FILE.exists():
            ENV_FILE.parent.mkdir(parents=True, exist_ok=True)
            ENV_FILE.write_text(DEFAULT_ENV.format(listen=listen))
            done.append(f"wrote {ENV_FILE}")
        # `init` may have run as root before the unit existed: hand the state over
        if STATE_DIR.exists():
            subprocess.run(["chown", "-R", f"{user}:{user}", str(STATE_DIR)], check=True,
                           timeout=120)
    path = install_unit(UNIT_NAME, render(user), dest, start=start)
    done.append(f"wrote {path}")
    return done
