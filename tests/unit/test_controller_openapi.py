"""The OpenAPI document teaches the API: every field of our schemas has a description and
an example; every route but /healthz demands a bearer token."""

from __future__ import annotations

from agent import spec as contract
from tests.controller_factories import region  # noqa: F401 - fixture

AGENT_TYPES = {name for name in dir(contract) if isinstance(getattr(contract, name), type)}


def test_every_field_has_description_and_example(region):
    doc = region.client.get("/openapi.json").json()
    missing = []
    for name, schema in doc["components"]["schemas"].items():
        if name in AGENT_TYPES or name in ("HTTPValidationError", "ValidationError") \
                or "ValidationError" in name:
            continue
        for field, prop in schema.get("properties", {}).items():
            # A nested schema's own fields carry the examples.
            nested = "$ref" in prop or "$ref" in prop.get("items", {}) \
                or any("$ref" in alt for alt in prop.get("anyOf", []))  # Optional[Model]
            if "description" not in prop or not (nested or prop.get("examples")
                                                 or "example" in prop):
                missing.append(f"{name}.{field}")
    assert missing == []


def test_every_operation_has_a_summary(region):
    doc = region.client.get("/openapi.json").json()
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            assert op.get("summary"), f"{method.upper()} {path}"


def test_every_route_but_healthz_needs_a_token(region):
    doc = region.client.get("/openapi.json").json()
    for path, methods in doc["paths"].items():
        if path == "/healthz":
            continue
        concrete = path.replace("{", "x").replace("}", "")
        for method in methods:
            r = region.client.request(method.upper(), concrete)
            assert r.status_code == 401, f"{method.upper()} {path}: {r.status_code}"
