"""Every route the CLI calls exists in the controller's OpenAPI description, with the
query parameters the CLI sends; a renamed route or filter fails here first."""

from __future__ import annotations

import pytest

from controller.app import create_app
from controller.cli import resources as r
from tests.controller_factories import make_settings, open_database, sqlite_url

ID = "{id}"

# (method, path, query parameters the CLI may send)
CLI_CALLS = [
    ("GET", r.ZONE.path, {"max_results", "next_token"}),
    ("POST", r.ZONE.path, set()),
    ("GET", r.HOST.path, {"zone_id", "max_results", "next_token"}),
    ("GET", r.HOST.item(ID), set()),
    ("GET", r.INSTANCE_TYPE.path, {"max_results", "next_token"}),
    ("POST", r.IMAGE.path, set()),
    ("GET", r.IMAGE.path, {"status", "max_results", "next_token"}),
    ("GET", r.IMAGE.item(ID), set()),
    ("DELETE", r.IMAGE.item(ID), set()),
    ("POST", r.KEY_PAIR.path, set()),
    ("GET", r.KEY_PAIR.path, {"max_results", "next_token"}),
    ("GET", r.KEY_PAIR.item(ID), set()),
    ("DELETE", r.KEY_PAIR.item(ID), set()),
    ("POST", r.VPC.path, set()),
    ("GET", r.VPC.path, {"max_results", "next_token"}),
    ("GET", r.VPC.item(ID), set()),
    ("DELETE", r.VPC.item(ID), set()),
    ("POST", r.VSWITCH.path, set()),
    ("GET", r.VSWITCH.path, {"vpc_id", "zone_id", "max_results", "next_token"}),
    ("GET", r.VSWITCH.item(ID), set()),
    ("DELETE", r.VSWITCH.item(ID), set()),
    ("POST", r.SECURITY_GROUP.path, set()),
    ("GET", r.SECURITY_GROUP.path, {"vpc_id", "max_results", "next_token"}),
    ("GET", r.SECURITY_GROUP.item(ID), set()),
    ("DELETE", r.SECURITY_GROUP.item(ID), set()),
    ("POST", r.INSTANCE.path, set()),
    ("GET", r.INSTANCE.path, {"status", "vpc_id", "vswitch_id", "host_id", "name",
                              "max_results", "next_token"}),
    ("GET", r.INSTANCE.item(ID), set()),
    ("POST", r.INSTANCE.item(ID) + "/start", set()),
    ("POST", r.INSTANCE.item(ID) + "/stop", set()),
    ("POST", r.INSTANCE.item(ID) + "/reboot", set()),
    ("DELETE", r.INSTANCE.item(ID), {"force"}),
    ("GET", "/operations/{id}", set()),
]


@pytest.fixture(scope="module")
def openapi(tmp_path_factory) -> dict[tuple[str, str], set[str]]:
    """``{(METHOD, path with {id}): query parameter names}`` from the controller's spec."""
    state = tmp_path_factory.mktemp("state")
    db, _ = open_database(sqlite_url(state))
    spec = create_app(make_settings(state), db).openapi()
    db.dispose()
    routes = {}
    for path, methods in spec["paths"].items():
        normalised = path.removeprefix("/api/v1")
        for part in normalised.split("/"):
            if part.startswith("{"):
                normalised = normalised.replace(part, ID)
        for method, op in methods.items():
            routes[(method.upper(), normalised)] = {
                p["name"] for p in op.get("parameters", []) if p.get("in") == "query"}
    return routes


@pytest.mark.parametrize("method,path,params", CLI_CALLS,
                         ids=[f"{m} {p}" for m, p, _ in CLI_CALLS])
def test_cli_route_exists(openapi, method, path, params):
    assert (method, path) in openapi, f"the controller has no {method} /api/v1{path}"
    assert params <= openapi[(method, path)], (
        f"{method} {path} lacks query parameters {params - openapi[(method, path)]}")

