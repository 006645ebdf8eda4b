"""The CLI of placement: deployment-set, placement explain, instance create --dry-run and
--placement, against a real controller (uvicorn in a thread) with fake agents."""

from __future__ import annotations

from tests.unit.test_cli_commands import (  # noqa: F401  (fixtures)
    as_json, cli, live, miniecs, network,
)

CREATE = ("instance", "create", "web-1", "--type", "ecs.t1.nano", "--image", "tiny",
          "--vswitch", "web", "--sg", "web-sg")


def test_deployment_set_commands_and_members(cli, network):  # noqa: F811
    for i in range(2):
        cli.region.register_host(f"hv-{i}")
    ds = as_json("deployment-set", "create", "web-ha", "--description", "one per host")
    assert ds["strategy"] == "Availability"
    first = as_json(*CREATE, "--deployment-set", "web-ha", "--placement", "pack")
    second = as_json(*CREATE[:2], "web-2", *CREATE[3:], "--deployment-set", ds["id"],
                     "--placement", "pack")
    assert first["host_id"] != second["host_id"]
    third = miniecs(*CREATE[:2], "web-3", *CREATE[3:], "--deployment-set", "web-ha", code=1)
    assert "DeploymentSet.NoAvailableHost" in third.stderr
    shown = as_json("deployment-set", "show", "web-ha")
    assert shown["instance_ids"] == [first["id"], second["id"]]
    table = miniecs("deployment-set", "list").stdout
    assert "web-ha" in table and "Availability" in table
    refused = miniecs("deployment-set", "delete", "web-ha", code=1)
    assert "DependencyViolation.DeploymentSet.Instances" in refused.stderr
    other = as_json("deployment-set", "create", "spare")
    assert "deleted" in miniecs("deployment-set", "delete", other["id"]).stdout
    assert "Strategy" in miniecs("deployment-set", "create", "x", "--strategy", "Affinity",
                                 code=1).stderr


def test_placement_explain_and_dry_run_tables(cli, network):  # noqa: F811
    cli.region.register_host("hv-big", vcpus=8, memory_mib=8192)
    cli.region.register_host("hv-tiny", vcpus=1, memory_mib=128)
    out = miniecs("placement", "explain", "--type", "ecs.t1.nano", "--image", "tiny",
                  "--vswitch", "web").stdout
    assert "chosen: hv-big" in out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("hv-")}
    assert "chosen" in rows["hv-big"]
    assert "filtered" in rows["hv-tiny"] and "[capacity] not enough memory" in rows["hv-tiny"]
    explained = as_json("placement", "explain", "--type", "ecs.t1.nano", "--image", "tiny",
                        "--vswitch", "web", "--placement", "pack")
    assert explained["policy"] == "pack" and len(explained["hosts"]) == 2

    dry = miniecs(*CREATE, "--dry-run").stdout
    assert "DryRunOperation" in dry and "chosen: hv-big" in dry
    assert as_json("instance", "list")["items"] == []
    dry_json = as_json(*CREATE, "--dry-run")
    assert dry_json["code"] == "DryRunOperation" and dry_json["host_name"] == "hv-big"
    bad = miniecs(*CREATE, "--dry-run", "--placement", "scatter", code=1)
    assert "InvalidParameter.PlacementPolicy" in bad.stderr
    assert as_json("instance", "list")["items"] == []


def test_host_delete_refused_then_done(cli, network):  # noqa: F811
    agent = cli.region.register_host("hv-gone")
    inst = as_json(*CREATE)
    refused = miniecs("host", "delete", "hv-gone", code=1)
    assert "DependencyViolation.Host.Instances" in refused.stderr and inst["id"] in refused.stderr
    with cli.region.db.write() as session:  # as if the instance had been deleted for good
        from datetime import UTC, datetime

        from controller.models import Instance
        row = session.get(Instance, inst["id"])
        row.status, row.deleted_at = "Deleted", datetime.now(UTC)
    assert f"deleted {agent.host_id}" in miniecs("host", "delete", "hv-gone").stdout
    assert as_json("host", "list")["items"] == []


def test_a_tenants_dry_run_prints_its_opaque_host(capsys):
    """A member's dry run has no placement explanation (the hosts are the operator's)."""
    from controller.cli.output import OutputFormat
    from controller.cli.placement import render_explanation

    render_explanation({"code": "DryRunOperation", "message": "ok", "host_id": "hh-" + "a" * 20,
                        "host_name": None, "placement": None}, OutputFormat.table)
    out = capsys.readouterr().out
    assert "DryRunOperation: ok" in out and "hh-" + "a" * 20 in out
