"""``make demo``: a controller, one rig hypervisor with its agent, and a real guest.

``python -m tests.rig.demo up`` starts it all, drives it with the real
``miniecs`` CLI (printing every command it runs), and SSHes into the guest;
the region keeps running afterwards for you to try the CLI against.
``python -m tests.rig.demo down`` removes everything it made.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from tests.rig.cloud import Cloud
from tests.rig.rig import PROJECT

NAME = "demo"
IMAGE = PROJECT / "images" / "build" / "tiny.qcow2"


def say(text: str) -> None:
    print(f"\033[1m==> {text}\033[0m", flush=True)


def cli(cloud: Cloud, *args: str) -> dict:
    print(f"    $ miniecs {' '.join(args)}", flush=True)
    out = cloud.cli(*args, "-o", "json").stdout
    return json.loads(out) if out.strip() else {}


def up() -> int:
    if Cloud.load(NAME):
        say("a demo is already running; `make demo-down` first")
        return 1
    if not IMAGE.exists():
        say(f"{IMAGE} is missing: run `make image`")
        return 1
    cloud = Cloud(name=NAME, port=8780)
    t0 = time.monotonic()
    say("starting a controller (SQLite), one rig hypervisor with its own libvirtd, and its agent")
    try:
        cloud.up(hosts=1)
    except Exception:
        cloud.down()
        raise
    print(f"    controller on {cloud.url}, state in {cloud.state_dir}")
    cloud.cli("configure", "--endpoint", cloud.url, "--token", cloud.admin_token)
    say("the hypervisor enrolled itself")
    cli(cloud, "host", "list")
    say("importing the tiny image")
    image = cli(cloud, "image", "import", "tiny", "--file", str(IMAGE), "--wait")
    say("a key pair, a VPC, a vSwitch and a security group")
    key_file = cloud.path / "demo-key.pem"
    keypair = cli(cloud, "keypair", "create", "demo-key", "--private-key-file", str(key_file))
    vpc = cli(cloud, "vpc", "create", "demo-vpc", "--cidr", "10.10.0.0/16")
    vsw = cli(cloud, "vswitch", "create", "demo-vsw", "--vpc", vpc["id"], "--zone", "zone-a",
              "--cidr", "10.10.1.0/24")
    sg = cli(cloud, "sg", "create", "demo-sg", "--vpc", vpc["id"])
    # a normal group admits only its members; let SSH in from the VPC (the router included)
    cli(cloud, "sg", "rule", "add", sg["id"], "--direction", "ingress", "--protocol", "tcp",
        "--port", "22/22", "--peer", "10.10.0.0/16", "--priority", "10")
    say("launching an instance and waiting for it to run")
    t1 = time.monotonic()
    inst = cli(cloud, "instance", "create", "demo-1", "--type", "ecs.t1.nano", "--image", image["id"],
               "--vswitch", vsw["id"], "--sg", sg["id"], "--keypair", keypair["id"],
               "--hostname", "demo-one", "--wait")
    running = time.monotonic() - t1
    print(f"    {inst['id']} is {inst['status']} at {inst['private_ip_address']} after {running:.1f}s")
    say(f"running `hostname` in {inst['id']} over SSH (paramiko, key {key_file.name})")
    proc = cloud.ssh(inst, "hostname; uname -r; ip -4 -o addr show eth0", key_file)
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr)
        say("SSH failed; the serial console says:")
        print(cloud.cli("instance", "console", inst["id"], check=False).stdout[-2000:])
        return 1
    for line in proc.stdout.splitlines():
        print(f"    guest> {line}")
    say(f"done in {time.monotonic() - t0:.0f}s. The region keeps running; try the CLI:")
    print(f"""
    export MINIECS_CONFIG={cloud.path / 'cli.toml'}
    export PATH={Path(sys.executable).parent}:$PATH
    miniecs instance list
    miniecs instance show {inst['id']}
    miniecs instance console {inst['id']}
    miniecs ssh {inst['id']} -i {key_file} uptime
    miniecs instance stop {inst['id']} --wait
    curl -s -H "Authorization: Bearer $(awk -F'"' '/token/{{print $2}}' {cloud.path / 'cli.toml'})" \\
         {cloud.url}/api/v1/instances | python3 -m json.tool

    The OpenAPI description: {cloud.url}/openapi.json
    SSH again:   nsenter --net={cloud.router_netns(inst)} ssh -i {key_file} root@{inst['private_ip_address']}
    Tear down:   make demo-down
""")
    return 0


def down() -> int:
    cloud = Cloud.load(NAME)
    if cloud is None:
        print("no demo running")
        return 0
    cloud.down()
    print("demo removed: domains, namespaces, daemons and files")
    return 0


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else "up"
    sys.exit(up() if cmd == "up" else down())
