"""``python -m tests.rig up|down|status``: a namespace rig for people to try by hand."""

from __future__ import annotations

import argparse
import json
import sys

from tests.rig.rig import Rig, rig_down


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rig")
    sub = parser.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="create hosts with their own libvirtd")
    up.add_argument("--name", default="dev")
    up.add_argument("--hosts", type=int, default=1)
    up.add_argument("--controller-port", type=int, default=8780)
    down = sub.add_parser("down", help="remove everything the rig made")
    down.add_argument("--name", default="dev")
    status = sub.add_parser("status")
    status.add_argument("--name", default="dev")
    args = parser.parse_args(argv)

    if args.cmd == "up":
        if Rig.load(args.name):
            print(f"rig {args.name} exists; run 'down' first", file=sys.stderr)
            return 1
        rig = Rig(name=args.name)
        try:
            rig.up(args.hosts, args.controller_port)
        except Exception:
            rig.down()
            raise
        for h in rig.hosts.values():
            print(f"{h.name}: netns {h.netns}, underlay {h.underlay_ip}, libvirt {h.libvirt_uri}")
        return 0
    if args.cmd == "down":
        print("removed" if rig_down(args.name) else "no such rig")
        return 0
    rig = Rig.load(args.name)
    print(json.dumps(None if rig is None else {h.name: vars(h) for h in rig.hosts.values()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
