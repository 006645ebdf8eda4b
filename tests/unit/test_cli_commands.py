"""The ``miniecs`` CLI against a real controller: the FastAPI app served by uvicorn on
127.0.0.1 in a thread, over a fresh SQLite database made the way ``init`` makes it."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import stat
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from controller.app import create_app
from controller.cli.main import app
from tests.controller_factories import (
    FakeAgent, Region, default_db_url, make_settings, open_database,
)


@dataclass
class Live:
    url: str
    region: Region
    config: Path

    @property
    def admin_token(self) -> str:
        return self.region.tokens.admin_token


def _serve(app_, sock: socket.socket) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app_, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "controller did not start"
        time.sleep(0.01)
    return server, thread


@pytest.fixture
def live(tmp_path, monkeypatch, default_db_url) -> Iterator[Live]:
    """A running controller and a CLI config path (no profile written yet)."""
    state = tmp_path / "state"
    settings = make_settings(state)
    db, tokens = open_database(default_db_url)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server, thread = _serve(create_app(settings, db), sock)
    config = tmp_path / "cli" / "config.toml"
    monkeypatch.setenv("MINIECS_CONFIG", str(config))
    for var in ("MINIECS_ENDPOINT", "MINIECS_TOKEN", "MINIECS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with httpx.Client(base_url=url, timeout=30) as http:
        yield Live(url, Region(http, db, settings, tokens), config)
    server.should_exit = True
    thread.join(10)
    sock.close()
    db.dispose()


def miniecs(*args: str, code: int = 0):
    """Run the CLI in-process; assert its exit code."""
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (
        f"miniecs {' '.join(args)} exited {result.exit_code}, wanted {code}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}\n{result.exception!r}")
    return result


def as_json(*args: str) -> dict:
    return json.loads(miniecs(*args, "-o", "json").stdout)


@pytest.fixture
def cli(live) -> Live:
    """``live`` with the default profile written by ``miniecs configure``."""
    miniecs("configure", "--endpoint", live.url, "--token", live.admin_token)
    return live


# ---- configure and profiles ----------------------------------------------------------------

def test_configure_writes_a_private_profile_that_later_commands_use(live):
    result = miniecs("configure", "--endpoint", live.url + "/", "--token", live.admin_token)
    assert str(live.config) in result.stderr
    assert stat.S_IMODE(live.config.stat().st_mode) == 0o600
    data = tomllib.loads(live.config.read_text())
    assert data == {"profiles": {"default": {"endpoint": live.url,
                                             "token": live.admin_token}}}
    # a second profile keeps the first one
    miniecs("configure", "--endpoint", live.url, "--token", "wrong", "--profile", "other.lab")
    data = tomllib.loads(live.config.read_text())
    assert set(data["profiles"]) == {"default", "other.lab"}
    assert data["profiles"]["default"]["token"] == live.admin_token
    zones = as_json("zone", "list")
    assert [z["id"] for z in zones["items"]] == ["zone-a"]


def test_wrong_token_is_reported_as_refused(live):
    miniecs("configure", "--endpoint", live.url, "--token", "not-a-token", "--profile", "bad")
    result = miniecs("--profile", "bad", "vpc", "list", code=4)
    assert result.stderr.startswith("Error: ")
    assert "token refused" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_profile_says_how_to_configure(cli):
    result = miniecs("--profile", "nope", "vpc", "list", code=1)
    assert "no profile 'nope'" in result.stderr
    assert "miniecs configure" in result.stderr
    assert "default" in result.stderr  # the profiles that do exist


def test_env_overrides_the_profile(cli, monkeypatch):
    monkeypatch.setenv("MINIECS_TOKEN", "overridden")
    miniecs("vpc", "list", code=4)
    monkeypatch.setenv("MINIECS_TOKEN", cli.admin_token)
    monkeypatch.setenv("MINIECS_CONFIG", str(cli.config.parent / "absent.toml"))
    monkeypatch.setenv("MINIECS_ENDPOINT", cli.url)
    assert as_json("vpc", "list") == {"items": [], "next_token": None}


def test_unreachable_controller(live):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    miniecs("configure", "--endpoint", closed, "--token", "t")
    result = miniecs("vpc", "list", code=3)
    assert result.stderr.startswith(f"Error: cannot reach controller at {closed}")
    assert "Traceback" not in result.output


# ---- resources -----------------------------------------------------------------------------

def test_vpc_and_vswitch_round_trip(cli):
    vpc = as_json("vpc", "create", "prod", "--cidr", "10.0.0.0/16")
    assert vpc["id"].startswith("vpc-") and vpc["cidr_block"] == "10.0.0.0/16"
    # the VPC referenced by name, resolved to its id
    vsw = as_json("vswitch", "create", "web", "--vpc", "prod", "--zone", "zone-a",
                  "--cidr", "10.0.1.0/24")
    assert vsw["vpc_id"] == vpc["id"]
    assert vsw["gateway_ip"] == "10.0.1.1"
    listed = as_json("vpc", "list")
    assert listed == {"items": [vpc], "next_token": None}
    assert as_json("vswitch", "list", "--vpc", vpc["id"])["items"] == [vsw]
    assert as_json("vswitch", "show", "web") == vsw
    # the API's JSON, verbatim
    assert listed == cli.region.ok("GET", "/vpcs")


def test_validation_error_prints_code_and_field_and_creates_nothing(cli):
    result = miniecs("vpc", "create", "prod", "--cidr", "10.0.0.0/33", code=1)
    line = result.stderr.strip()
    assert line.startswith("Error: InvalidCidrBlock."), line
    assert line.endswith("(field: cidr_block)"), line
    assert len(line.splitlines()) == 1 and result.stdout == ""
    assert cli.region.items("/vpcs") == []


def test_conflict_error_names_code_and_field(cli):
    vpc = as_json("vpc", "create", "prod", "--cidr", "10.0.0.0/16")
    miniecs("vswitch", "create", "a", "--vpc", vpc["id"], "--zone", "zone-a",
            "--cidr", "10.0.1.0/24")
    result = miniecs("vswitch", "create", "b", "--vpc", vpc["id"], "--zone", "zone-a",
                     "--cidr", "10.0.1.128/25", code=1)
    assert "Error: InvalidVSwitchCidr.Overlapped:" in result.stderr
    assert "(field: cidr_block)" in result.stderr


def test_table_and_json_output(cli):
    vpc = as_json("vpc", "create", "prod", "--cidr", "10.0.0.0/16")
    table = miniecs("vpc", "list").stdout
    header, row = table.splitlines()[:2]
    assert header.split() == ["ID", "NAME", "CIDR", "VNI", "CREATED"]
    assert row.split()[:4] == [vpc["id"], "prod", "10.0.0.0/16", str(vpc["vni"])]
    assert all(line == line.rstrip() for line in table.splitlines())  # pipe-friendly
    with pytest.raises(json.JSONDecodeError):
        json.loads(table)
    shown = miniecs("vpc", "show", vpc["id"]).stdout
    assert {line.split()[0] for line in shown.splitlines()} == set(vpc)
    assert json.loads(miniecs("vpc", "show", vpc["id"], "-o", "json").stdout) == vpc
    assert "(none)" in miniecs("sg", "list").stdout


def test_list_pages(cli):
    ids = [as_json("vpc", "create", f"v{i}", "--cidr", "10.0.0.0/16")["id"] for i in range(3)]
    page = as_json("vpc", "list", "--max-results", "2")
    assert [v["id"] for v in page["items"]] == ids[:2] and page["next_token"]
    rest = as_json("vpc", "list", "--max-results", "2", "--next-token", page["next_token"])
    assert [v["id"] for v in rest["items"]] == ids[2:] and rest["next_token"] is None
    with_default = cli.region.ok("GET", "/vpcs", max_results=1)
    assert with_default["next_token"]  # the CLI below must follow it
    assert [v["id"] for v in as_json("vpc", "list")["items"]] == ids


def test_names_that_are_ambiguous_or_unknown(cli):
    as_json("vpc", "create", "twin", "--cidr", "10.0.0.0/16")
    as_json("vpc", "create", "twin", "--cidr", "10.1.0.0/16")
    result = miniecs("sg", "create", "g", "--vpc", "twin", code=1)
    assert "2 VPCs are named 'twin'" in result.stderr
    assert "no VPC with id or name 'ghost'" in miniecs("vpc", "show", "ghost", code=1).stderr
    unknown = miniecs("vpc", "show", "vpc-00000000000000000000", code=1)
    assert "Error: InvalidVpcId.NotFound:" in unknown.stderr


def test_zone_instance_type_and_security_group_commands(cli):
    zone = as_json("zone", "create", "zone-b", "--description", "rack 2")
    assert zone["id"] == "zone-b"
    assert [z["id"] for z in as_json("zone", "list")["items"]] == ["zone-a", "zone-b"]
    types = {t["id"]: t for t in as_json("instance-type", "list")["items"]}
    assert types["ecs.t1.small"]["vcpus"] == 1 and types["ecs.t1.small"]["memory_mib"] == 1024
    vpc = as_json("vpc", "create", "prod", "--cidr", "10.0.0.0/16")
    sg = as_json("sg", "create", "web", "--vpc", "prod")
    assert sg["vpc_id"] == vpc["id"] and sg["member_count"] == 0
    assert as_json("sg", "list", "--vpc", "prod")["items"] == [sg]
    assert f"deleted {sg['id']}" in miniecs("sg", "delete", "web").stdout
    result = miniecs("vpc", "delete", "prod")
    assert vpc["id"] in result.stdout
    assert cli.region.items("/vpcs") == []


def test_keypair_create_writes_the_private_key_0600(cli, tmp_path):
    key_file = tmp_path / "k.pem"
    created = as_json("keypair", "create", "mine", "--private-key-file", str(key_file))
    assert created["id"].startswith("kp-") and created["private_key"] is None
    assert key_file.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # never overwritten, and nothing created when refused
    result = miniecs("keypair", "create", "again", "--private-key-file", str(key_file), code=1)
    assert "refusing to overwrite" in result.stderr
    assert [k["name"] for k in cli.region.items("/key-pairs")] == ["mine"]


def test_keypair_create_prints_the_key_once_and_import_and_delete(cli, tmp_path):
    result = miniecs("keypair", "create", "shown")
    assert "-----BEGIN OPENSSH PRIVATE KEY-----" in result.stdout
    assert "shown only this once" in result.stderr
    pub = cli.region.items("/key-pairs")[0]["public_key"]
    (tmp_path / "id.pub").write_text(pub + "\n")
    imported = as_json("keypair", "import", "imported", "--public-key-file",
                       str(tmp_path / "id.pub"))
    assert imported["public_key"].split()[:2] == pub.split()[:2]
    listed = miniecs("keypair", "list").stdout
    assert "shown" in listed and "imported" in listed and imported["fingerprint"] in listed
    miniecs("keypair", "delete", "imported")
    assert [k["name"] for k in as_json("keypair", "list")["items"]] == ["shown"]


def test_image_import_wait_list_show_delete(cli, tmp_path):
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is not installed")
    disk = tmp_path / "tiny.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64M"], check=True)
    image = as_json("image", "import", "tiny", "--file", str(disk), "--wait", "--timeout", "60")
    assert image["status"] == "Available" and image["virtual_size_bytes"] == 64 * 1024 ** 2
    assert image["source"] == str(disk)
    row = miniecs("image", "list").stdout.splitlines()[1].split()
    assert row[:4] == [image["id"], "tiny", "Available", "qcow2"]
    assert as_json("image", "show", "tiny") == image
    miniecs("image", "delete", "tiny")
    assert cli.region.items("/images") == []


def test_image_import_refused_file_is_a_clean_error(cli, tmp_path):
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"not an image at all" * 100)
    result = miniecs("image", "import", "bad", "--file", str(bad), code=1)
    assert result.stderr.startswith("Error: InvalidImage."), result.stderr
    assert result.stderr.strip().endswith("(field: source_path)")
    assert cli.region.items("/images") == []


def test_image_import_wait_reports_the_error_reason(cli):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/tiny.qcow2"
    result = miniecs("image", "import", "far", "--url", closed, "--wait", "--timeout", "60",
                     code=1)
    last = result.stderr.strip().splitlines()[-1]
    assert re.match(r"Error: image m-[a-z0-9]{20} went to Error: InvalidImage\.", last), last
    # progress lines went to stderr too (plain lines: the runner is not a TTY)
    assert re.search(r"^image m-[a-z0-9]{20}: ", result.stderr, re.M)
    images = as_json("image", "list", "--status", "Error")["items"]
    assert [(i["name"], i["source"]) for i in images] == [("far", closed)]


def test_image_import_needs_exactly_one_source(cli):
    assert "exactly one of --file and --url" in miniecs("image", "import", "x", code=1).stderr


# ---- instances -----------------------------------------------------------------------------

class AgentLoop:
    """A fake agent that keeps converging its host to the spec, in a thread."""

    def __init__(self, agent: FakeAgent) -> None:
        self.agent = agent
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.agent.converge()
            self.stop.wait(0.1)

    def __enter__(self) -> AgentLoop:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def network(cli) -> dict:
    net = {"vpc": as_json("vpc", "create", "prod", "--cidr", "10.0.0.0/16")}
    net["vswitch"] = as_json("vswitch", "create", "web", "--vpc", "prod", "--zone", "zone-a",
                             "--cidr", "10.0.1.0/24")
    net["sg"] = as_json("sg", "create", "web-sg", "--vpc", "prod")
    net["image"] = cli.region.image(name="tiny")
    return net


@pytest.fixture
def agent(cli) -> Iterator[FakeAgent]:
    """A registered host whose fake agent has its own HTTP client (it may run in a thread)."""
    with httpx.Client(base_url=cli.url, timeout=30) as http:
        region = cli.region
        yield Region(http, region.db, region.settings, region.tokens).register_host()


def test_instance_lifecycle_with_wait(cli, network, agent, tmp_path):
    user_data = tmp_path / "ud.yaml"
    user_data.write_text("#cloud-config\nhostname: x\n")
    with AgentLoop(agent):
        inst = as_json("instance", "create", "web-1", "--type", "ecs.t1.small",
                       "--image", "tiny", "--vswitch", "web", "--sg", "web-sg",
                       "--ip", "10.0.1.23", "--hostname", "web-one",
                       "--user-data-file", str(user_data), "--client-token", "tok-1",
                       "--wait", "--timeout", "30")
        assert inst["status"] == "Running"
        assert inst["private_ip_address"] == "10.0.1.23" and inst["hostname"] == "web-one"
        assert inst["security_group_ids"] == [network["sg"]["id"]]
        again = as_json("instance", "create", "web-1", "--type", "ecs.t1.small",
                        "--image", network["image"], "--vswitch", network["vswitch"]["id"],
                        "--sg", network["sg"]["id"], "--client-token", "tok-1")
        assert again["id"] == inst["id"]
        table = miniecs("instance", "list", "--vpc", "prod").stdout
        assert inst["id"] in table and "Running" in table and "10.0.1.23" in table
        stopped = as_json("instance", "stop", "web-1", "--wait", "--timeout", "30")
        assert stopped["status"] == "Stopped"
        assert as_json("instance", "list", "--status", "Stopped")["items"][0]["id"] == inst["id"]
        started = as_json("instance", "start", inst["id"], "--wait", "--timeout", "30")
        assert started["status"] == "Running"
        result = miniecs("instance", "delete", inst["id"], code=1)
        assert "Error: IncorrectInstanceStatus:" in result.stderr
        gone = as_json("instance", "delete", inst["id"], "--force", "--wait", "--timeout", "30")
        assert gone["status"] == "Deleted"
    assert as_json("instance", "list")["items"] == []


CREATE = ("instance", "create", "web-1", "--type", "ecs.t1.small", "--image", "tiny",
          "--vswitch", "web", "--sg", "web-sg")


def test_instance_start_wait_fails_with_the_reason(cli, network, agent):
    inst = as_json(*CREATE)
    assert inst["status"] == "Pending"
    agent.spec()
    agent.report(extra=[{"id": inst["id"], "power": "error", "error": "disk full",
                         "retryable": False}])
    result = miniecs("instance", "start", inst["id"], "--wait", "--timeout", "30", code=1)
    assert result.stderr.strip().splitlines()[-1] == \
        f"Error: instance {inst['id']} went to Error: disk full"


def test_instance_wait_gives_up_after_timeout(cli, network, agent):
    # the host is registered but its agent never converges: the instance stays Pending
    result = miniecs(*CREATE, "--wait", "--timeout", "1", code=5)
    assert "gave up after 1s" in result.stderr and "it is Pending" in result.stderr


def test_instance_console(cli, network, agent):
    inst = as_json(*CREATE)
    route = cli.region.call("GET", f"/instances/{inst['id']}/console")
    if route.status_code == 404 and route.json()["code"] == "NotFound":
        # the controller has no console route (yet): say so, in one line
        result = miniecs("instance", "console", "web-1", code=1)
        assert result.stderr.startswith(
            "Error: this controller does not expose instance consoles")
        assert len(result.stderr.strip().splitlines()) == 1
    else:
        assert route.status_code == 200, route.text
        result = miniecs("instance", "console", "web-1")
        assert "Error" not in result.stderr
    ghost = miniecs("instance", "console", "i-00000000000000000000", code=1)
    assert "Error: InvalidInstanceId.NotFound" in ghost.stderr or \
        "does not expose instance consoles" in ghost.stderr


def test_instance_reboot_wait_follows_the_operation(cli, network, agent):
    with AgentLoop(agent):
        inst = as_json(*CREATE, "--wait", "--timeout", "30")
    op = as_json("instance", "reboot", "web-1")
    assert op["kind"] == "reboot" and op["outcome"] == "pending" and op["is_final"] is False

    def fail_it() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pending = [o for o in agent.spec()["instances"][0].get("operations", [])]
            if len(pending) == 2:
                break
            time.sleep(0.05)
        agent.report(operations=[{"id": o["id"], "ok": False, "message": "no ACPI"}
                                 for o in pending])

    failer = threading.Thread(target=fail_it, daemon=True)
    failer.start()
    result = miniecs("instance", "reboot", inst["id"], "--force", "--wait", "--timeout", "30",
                     code=1)
    failer.join(10)
    assert re.search(r"Error: operation op-[a-z0-9]{20} failed: no ACPI", result.stderr), \
        result.stderr


def test_bad_option_value_is_a_usage_error(cli):
    result = miniecs("vpc", "list", "-o", "yaml", code=2)
    assert "yaml" in result.stderr


def test_host_list_and_show_by_name(cli, agent):
    host = as_json("host", "show", "hv-01")
    assert host["id"] == agent.host_id and host["state"] == "ready"
    header, row = miniecs("host", "list", "--zone", "zone-a").stdout.splitlines()[:2]
    assert header.split()[:5] == ["ID", "NAME", "ZONE", "STATE", "VIRT"]
    assert row.split()[:7] == [agent.host_id, "hv-01", "zone-a", "ready", "qemu", "0/4",
                               "0/8192"]
    assert as_json("host", "list", "--zone", "zone-b")["items"] == []
