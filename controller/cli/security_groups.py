"""``miniecs sg``: security groups, their rules, membership, ``explain`` and rule hit counters."""

from __future__ import annotations

from typing import Annotated

import typer

from controller.cli.context import MaxResultsOpt, NextTokenOpt, OutputOpt, client, list_page_or_all
from controller.cli.output import OutputFormat, col, render_list, render_message, render_object
from controller.cli.resources import INSTANCE, SECURITY_GROUP, VPC, resolve

app = typer.Typer(help="Security groups: belong to a VPC; instances' NICs are members.",
                  no_args_is_help=True)

COLUMNS = [col("ID", "id"), col("NAME", "name"), col("VPC", "vpc_id"), col("TYPE", "type"),
           col("INNER", "inner_access_policy"), col("MEMBERS", "member_count"),
           col("RULES", "rule_count"), col("CREATED", "created_at")]
RULE_COLUMNS = [col("ID", "id"), col("DIR", "direction"), col("PRIO", "priority"),
                col("POLICY", "policy"), col("PROTO", "protocol"), col("PORTS", "port_range"),
                col("PEER CIDR", "peer_cidr"), col("PEER GROUP", "peer_group_id"),
                col("DESCRIPTION", "description")]

rule_app = typer.Typer(help="Rules of a security group (ECS semantics).", no_args_is_help=True)
app.add_typer(rule_app, name="rule")


@app.command("create")
def create_security_group(ctx: typer.Context,
                          name: Annotated[str, typer.Argument(help="Group name")],
                          vpc: Annotated[str, typer.Option("--vpc", help="VPC id or name")],
                          description: Annotated[str, typer.Option(help="Free text")] = "",
                          type_: Annotated[str, typer.Option(
                              "--type", help="normal or enterprise")] = "normal",
                          inner_access: Annotated[str | None, typer.Option(
                              help="normal groups: accept or drop")] = None,
                          output: OutputOpt = OutputFormat.table) -> None:
    """Create a security group."""
    api = client(ctx)
    body = {"name": name, "vpc_id": resolve(api, VPC, vpc), "description": description,
            "type": type_}
    if inner_access:
        body["inner_access_policy"] = inner_access
    render_object(api.post(SECURITY_GROUP.path, body), output)


@app.command("list")
def list_security_groups(ctx: typer.Context,
                         vpc: Annotated[str | None, typer.Option(
                             help="Only this VPC's (id or name)")] = None,
                         output: OutputOpt = OutputFormat.table,
                         max_results: MaxResultsOpt = None,
                         next_token: NextTokenOpt = None) -> None:
    """List security groups."""
    vpc_id = resolve(client(ctx), VPC, vpc) if vpc else None
    render_list(list_page_or_all(ctx, SECURITY_GROUP.path, max_results, next_token,
                                 vpc_id=vpc_id), COLUMNS, output)


@app.command("show")
def show_security_group(ctx: typer.Context,
                        group: Annotated[str, typer.Argument(help="Group id or name")],
                        output: OutputOpt = OutputFormat.table) -> None:
    """Show one security group."""
    api = client(ctx)
    render_object(api.get(SECURITY_GROUP.item(resolve(api, SECURITY_GROUP, group))), output)


@app.command("delete")
def delete_security_group(ctx: typer.Context,
                          group: Annotated[str, typer.Argument(help="Group id or name")],
                          output: OutputOpt = OutputFormat.table) -> None:
    """Delete a security group (refused while it has members)."""
    api = client(ctx)
    group_id = resolve(api, SECURITY_GROUP, group)
    answer = api.delete(SECURITY_GROUP.item(group_id))
    render_message(answer or {"id": group_id, "deleted": True}, output, f"deleted {group_id}")


@app.command("update")
def update_security_group(ctx: typer.Context,
                          group: Annotated[str, typer.Argument(help="Group id or name")],
                          name: Annotated[str | None, typer.Option(help="New name")] = None,
                          description: Annotated[str | None, typer.Option(help="Free text")] = None,
                          inner_access: Annotated[str | None, typer.Option(
                              help="accept or drop (normal groups)")] = None,
                          output: OutputOpt = OutputFormat.table) -> None:
    """Rename a group or switch its inner access policy."""
    api = client(ctx)
    body = {k: v for k, v in (("name", name), ("description", description),
                              ("inner_access_policy", inner_access)) if v is not None}
    render_object(api.patch(SECURITY_GROUP.item(resolve(api, SECURITY_GROUP, group)), body),
                  output)


def _membership(ctx: typer.Context, group: str, instance: str, action: str,
                output: OutputFormat) -> None:
    api = client(ctx)
    gid = resolve(api, SECURITY_GROUP, group)
    body = {"instance_id": resolve(api, INSTANCE, instance)}
    render_object(api.post(f"{SECURITY_GROUP.item(gid)}/{action}", body), output)


@app.command("join")
def join(ctx: typer.Context, group: Annotated[str, typer.Argument(help="Group id or name")],
         instance: Annotated[str, typer.Option("--instance", help="Instance id or name")],
         output: OutputOpt = OutputFormat.table) -> None:
    """Add an instance's NIC to a group (takes effect on its host within a second)."""
    _membership(ctx, group, instance, "join", output)


@app.command("leave")
def leave(ctx: typer.Context, group: Annotated[str, typer.Argument(help="Group id or name")],
          instance: Annotated[str, typer.Option("--instance", help="Instance id or name")],
          output: OutputOpt = OutputFormat.table) -> None:
    """Take an instance's NIC out of a group; flows only that group admitted are cut."""
    _membership(ctx, group, instance, "leave", output)


def _rule_body(direction: str, protocol: str, port: str, peer: str | None,
               peer_group: str | None, source_port: str | None, local: str | None,
               policy: str, priority: int, description: str, api) -> dict:
    body = {"direction": direction, "protocol": protocol, "port_range": port, "policy": policy,
            "priority": priority, "description": description}
    if peer:
        body["peer_cidr"] = peer
    if peer_group:
        body["peer_group_id"] = resolve(api, SECURITY_GROUP, peer_group)
    if source_port:
        body["source_port_range"] = source_port
    if local:
        body["local_cidr"] = local
    return body


DirectionOpt = Annotated[str, typer.Option("--direction", help="ingress or egress")]
ProtocolOpt = Annotated[str, typer.Option("--protocol", help="tcp, udp, icmp or all")]
PortOpt = Annotated[str, typer.Option("--port", help="start/end, or -1/-1 for icmp/all")]
PeerOpt = Annotated[str | None, typer.Option(
    "--peer", help="Source (ingress) or destination (egress) CIDR; default 0.0.0.0/0")]
PeerGroupOpt = Annotated[str | None, typer.Option(
    "--peer-group", help="Source/destination security group (id or name)")]
SourcePortOpt = Annotated[str | None, typer.Option("--source-port", help="start/end")]
LocalOpt = Annotated[str | None, typer.Option("--local", help="The member's own CIDR")]
PolicyOpt = Annotated[str, typer.Option("--policy", help="accept or drop")]
PriorityOpt = Annotated[int, typer.Option("--priority", help="1-100, smaller wins")]


@rule_app.command("add")
def rule_add(ctx: typer.Context, group: Annotated[str, typer.Argument(help="Group id or name")],
             direction: DirectionOpt = "ingress", protocol: ProtocolOpt = "tcp",
             port: PortOpt = "-1/-1", peer: PeerOpt = None, peer_group: PeerGroupOpt = None,
             source_port: SourcePortOpt = None, local: LocalOpt = None,
             policy: PolicyOpt = "accept", priority: PriorityOpt = 1,
             description: Annotated[str, typer.Option(help="Free text")] = "",
             output: OutputOpt = OutputFormat.table) -> None:
    """Add a rule (adding one that exists changes nothing)."""
    api = client(ctx)
    gid = resolve(api, SECURITY_GROUP, group)
    body = _rule_body(direction, protocol, port, peer, peer_group, source_port, local, policy,
                      priority, description, api)
    render_object(api.post(f"{SECURITY_GROUP.item(gid)}/rules", body), output)


@rule_app.command("list")
def rule_list(ctx: typer.Context, group: Annotated[str, typer.Argument(help="Group id or name")],
              direction: Annotated[str | None, typer.Option(help="Only this direction")] = None,
              hits: Annotated[bool, typer.Option(
                  "--hits", help="Packet counters read back from the hosts' iptables")] = False,
              output: OutputOpt = OutputFormat.table) -> None:
    """List a group's rules in evaluation order."""
    api = client(ctx)
    gid = resolve(api, SECURITY_GROUP, group)
    params = {"hits": "true"} if hits else {}
    if direction:
        params["direction"] = direction
    columns = RULE_COLUMNS + ([col("HITS", "hits")] if hits else [])
    render_list(api.get(f"{SECURITY_GROUP.item(gid)}/rules", **params), columns, output)


@rule_app.command("remove")
def rule_remove(ctx: typer.Context, group: Annotated[str, typer.Argument(help="Group id or name")],
                rule_id: Annotated[str | None, typer.Argument(
                    help="Rule id; or give the rule's fields instead")] = None,
                direction: DirectionOpt = "ingress", protocol: ProtocolOpt = "tcp",
                port: PortOpt = "-1/-1", peer: PeerOpt = None, peer_group: PeerGroupOpt = None,
                source_port: SourcePortOpt = None, local: LocalOpt = None,
                policy: PolicyOpt = "accept", priority: PriorityOpt = 1,
                output: OutputOpt = OutputFormat.table) -> None:
    """Remove a rule by id or by its fields; flows it admitted are cut."""
    api = client(ctx)
    gid = resolve(api, SECURITY_GROUP, group)
    if rule_id:
        api.delete(f"{SECURITY_GROUP.item(gid)}/rules/{rule_id}")
        answer = {"id": rule_id, "deleted": True}
    else:
        body = _rule_body(direction, protocol, port, peer, peer_group, source_port, local,
                          policy, priority, "", api)
        answer = api.post(f"{SECURITY_GROUP.item(gid)}/rules/revoke", body)
    render_message(answer, output, f"removed {answer['id']}")


@app.command("explain")
def explain(ctx: typer.Context,
            instance: Annotated[str, typer.Option("--instance", help="Instance id or name")],
            peer: Annotated[str, typer.Option("--peer", help="Remote IPv4 address")],
            direction: DirectionOpt = "ingress", protocol: ProtocolOpt = "tcp",
            port: Annotated[int | None, typer.Option("--port", help="Destination port")] = None,
            output: OutputOpt = OutputFormat.table) -> None:
    """The verdict for a new connection and the rule that decides it (or the default)."""
    api = client(ctx)
    body = {"instance_id": resolve(api, INSTANCE, instance), "direction": direction,
            "protocol": protocol, "peer": peer}
    if port is not None:
        body["port"] = port
    answer = api.post("/security-group-explain", body)
    if output is OutputFormat.json:
        render_object(answer, output)
    else:
        typer.echo(f"{answer['verdict'].upper()}  decided by {answer['decided_by']}: "
                   f"{answer['reason']}")
