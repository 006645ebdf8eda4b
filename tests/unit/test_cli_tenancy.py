"""``miniecs project|user|apikey`` against a real controller, and a profile holding an
API key: the member sees its own project only; a revoked key is refused."""

from __future__ import annotations

import tomllib

from tests.unit.test_cli_commands import as_json, cli, live, miniecs  # noqa: F401 - fixtures


def test_project_user_apikey_lifecycle_and_a_member_profile(cli, monkeypatch):  # noqa: F811
    created = as_json("project", "create", "acme", "instances=2", "vcpus=unlimited")
    assert created["quota"]["instances"] == 2 and created["quota"]["vcpus"] is None
    table = miniecs("project", "show", "acme").stdout
    assert "instances" in table and "LIMIT" in table
    assert as_json("project", "quota-set", "acme", "eips=1")["quota"] == {
        **created["quota"], "eips": 1}
    miniecs("project", "quota-set", "acme", "bogus=1", code=1)
    user = as_json("user", "create", "alice", "--project", "acme")
    assert [u["name"] for u in as_json("user", "list", "--project", "acme")["items"]] == ["alice"]
    out = miniecs("apikey", "create", "--user", "alice", "--role", "member")
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("mecsk_") and "shown only this once" in out.stderr
    keys = as_json("apikey", "list", "--user", user["id"])["items"]
    assert len(keys) == 1 and "key" not in keys[0] and keys[0]["role"] == "member"
    assert key not in miniecs("apikey", "list").stdout

    # the member's own profile: same bearer header, a project of its own
    miniecs("configure", "--endpoint", cli.url, "--token", key, "--profile", "alice")
    data = tomllib.loads(cli.config.read_text())
    assert data["profiles"]["alice"]["token"] == key
    vpc = as_json("--profile", "alice", "vpc", "create", "net", "--cidr", "10.0.0.0/16")
    assert [v["id"] for v in as_json("--profile", "alice", "vpc", "list")["items"]] == [vpc["id"]]
    assert [p["id"] for p in as_json("--profile", "alice", "project", "list")["items"]] == ["acme"]
    refused = miniecs("--profile", "alice", "project", "create", "evil", code=miniecs_code())
    assert "Forbidden.AdminOnly" in refused.stderr or "admin" in refused.stderr
    # the admin acting in acme through the profile's project sees the member's VPC only
    miniecs("configure", "--endpoint", cli.url, "--token", cli.admin_token, "--profile", "ops",
            "--project", "acme")
    assert [v["id"] for v in as_json("--profile", "ops", "vpc", "list")["items"]] == [vpc["id"]]

    miniecs("apikey", "revoke", keys[0]["id"])
    miniecs("--profile", "alice", "vpc", "list", code=4)
    miniecs("project", "delete", "acme", code=miniecs_code())  # still has a VPC and a user
    miniecs("vpc", "delete", vpc["id"])
    miniecs("user", "delete", "alice")
    miniecs("project", "delete", "acme")
    assert [p["id"] for p in as_json("project", "list")["items"]] == ["default"]


def miniecs_code() -> int:
    """The CLI's exit code for a refused (4xx other than 401) request."""
    from controller.cli.client import EXIT_API_ERROR

    return EXIT_API_ERROR
