"""``miniecs placement explain``: where a create would go, and why every other host would not."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from controller.cli.context import OutputOpt, client
from controller.cli.output import (
    Column, OutputFormat, col, print_json, render_list, show,
)
from controller.cli.resources import DEPLOYMENT_SET, IMAGE, SECURITY_GROUP, VSWITCH, resolve

app = typer.Typer(help="Placement: how the scheduler chooses hosts.", no_args_is_help=True)

HOST_COLUMNS = [
    col("HOST", "host_name"), col("ZONE", "zone_id"), col("STATE", "state"),
    col("RESULT", "result"), col("RANK", "rank"), col("SCORE", "score"),
    col("LOAD AFTER", "load_after"),
    Column("WHY FILTERED", lambda h: "; ".join(f"[{r['filter']}] {r['reason']}"
                                              for r in h.get("rejected_by") or []) or None),
]


def render_explanation(data: dict, output: OutputFormat) -> None:
    """A placement explanation (or a dry-run answer holding one): summary, then every host."""
    if output is OutputFormat.json:
        print_json(data)
        return
    explanation = data.get("placement", data)
    head = (f"{data['code']}: {data['message']}\n" if "code" in data else "")
    if explanation is None:  # a tenant's dry run: the hosts are the operator's
        show(Text(f"{head}would be placed on host {data['host_id']} (an opaque id within "
                  "this project)"))
        return
    demand = explanation["demand"]
    chosen = explanation.get("chosen_host_name")
    show(Text(
        f"{head}zone {explanation['zone_id']}, policy {explanation['policy']}"
        + (f", deployment set {explanation['deployment_set_id']}"
           if explanation.get("deployment_set_id") else "")
        + f"; needs {demand['vcpus']} vCPU, {demand['memory_mib']} MiB, {demand['disk_gib']} GiB"
        + (f"\nchosen: {chosen} ({explanation['chosen_host_id']})" if chosen
           else "\nchosen: none: no host passes every filter")))
    render_list({"items": explanation["hosts"]}, HOST_COLUMNS, output)


def placement_body(api, *, instance_type: str, image: str, vswitch: str,
                   disk_size: int | None, placement: str | None,
                   deployment_set: str | None) -> dict:
    """The placement fields of an instance create body, names resolved to ids."""
    body: dict = {"instance_type": instance_type, "image_id": resolve(api, IMAGE, image),
                  "vswitch_id": resolve(api, VSWITCH, vswitch)}
    optional = {"system_disk_size_gib": disk_size, "placement_policy": placement,
                "deployment_set_id": resolve(api, DEPLOYMENT_SET, deployment_set)
                if deployment_set else None}
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


@app.command("explain")
def explain(
    ctx: typer.Context,
    instance_type: Annotated[str, typer.Option("--type", help="Instance type, e.g. ecs.t1.small")],
    image: Annotated[str, typer.Option("--image", help="Image id or name")],
    vswitch: Annotated[str, typer.Option("--vswitch", help="vSwitch id or name (the zone)")],
    disk_size: Annotated[int | None, typer.Option(
        "--disk-size", min=1, help="System disk in GiB (default: the image's minimum)")] = None,
    placement: Annotated[str | None, typer.Option(
        "--placement", help="spread or pack (default: the region's)")] = None,
    deployment_set: Annotated[str | None, typer.Option(
        "--deployment-set", help="Deployment set id or name")] = None,
    security_groups: Annotated[list[str] | None, typer.Option(
        "--sg", help="Security group id or name (accepted, not used to place)")] = None,
    output: OutputOpt = OutputFormat.table,
) -> None:
    """List every host with why it was filtered out or how it scored; creates nothing."""
    api = client(ctx)
    body = placement_body(api, instance_type=instance_type, image=image, vswitch=vswitch,
                          disk_size=disk_size, placement=placement,
                          deployment_set=deployment_set)
    if security_groups:
        body["security_group_ids"] = [resolve(api, SECURITY_GROUP, g) for g in security_groups]
    render_explanation(api.post("/placement/explain", body), output)
