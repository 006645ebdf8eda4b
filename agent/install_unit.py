"""``miniecs-agent install-unit``: install (and optionally start) miniecs-agent.service."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.units import UNIT_DIR, bin_dir, install_unit, render_unit, systemd_is_init

UNIT_NAME = "miniecs-agent.service"
TEMPLATE = Path(__file__).with_name("systemd") / UNIT_NAME


def render(config: Path, bin_path: Path | None = None) -> str:
    return render_unit(TEMPLATE, bin_dir=bin_path or bin_dir(), config=config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="miniecs-agent install-unit",
        description="Install the systemd unit of this agent installation")
    parser.add_argument("--config", type=Path, default=Path("/etc/miniecs/agent.toml"),
                        help="Agent TOML configuration the unit runs with")
    parser.add_argument("--dest", type=Path, default=UNIT_DIR,
                        help="Directory to write the unit to (default %(default)s; another "
                             "directory only writes the file)")
    parser.add_argument("--now", action="store_true", help="Enable and (re)start it now")
    args = parser.parse_args(argv)
    path = install_unit(UNIT_NAME, render(args.config.resolve()), args.dest, start=args.now)
    print(f"wrote {path}")
    if args.dest == UNIT_DIR and not systemd_is_init():
        print("systemd is not PID 1 here: the unit is installed but not started", file=sys.stderr)
    return 0
