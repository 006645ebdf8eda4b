"""The agent's configuration: one TOML file parsed into one pydantic model."""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.errors import PermanentError


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = Field(
        default=None, description="CA certificate to verify an HTTPS controller against")
    controller_url: str = Field(description="Base URL of the controller", examples=["http://127.0.0.1:8080"])
    enrolment_token: str = Field(default="", description="Region enrolment token (used once)", repr=False)
    host_token: str = Field(
        default="", repr=False,
        description="This host's token after `miniecs host rekey` (overrides host.json's)")
    host_name: str
    zone: str
    libvirt_uri: str = "qemu:///system"
    virt_type: Literal["kvm", "qemu", "auto"] = "auto"
    state_dir: Path = Path("/var/lib/miniecs-agent")
    underlay_address: str
    netns_dir: Path | None = Field(
        default=None,
        description="Where router network namespaces are bind-mounted; default <state_dir>/netns "
                    "(set /run/netns to make them visible to `ip netns`)")
    uplink_interface: str | None = Field(
        default=None, description="Interface toward the outside world (outbound NAT and EIPs "
        "leave and arrive here; the host's routing table carries them); none: VPCs stay private")
    disk_cache: Literal["auto", "none", "writeback"] = Field(
        default="auto", description="qcow2 cache mode; auto = none where O_DIRECT works, else writeback")
    migration_uri: str = Field(
        default="qemu+tls://{address}/system",
        description="libvirt URI of a peer host for live migration; {address} is its underlay "
        "address (qemu+tls, or qemu+ssh://user@{address}/system; qemu+tcp only on a closed "
        "test underlay)")
    migration_timeout_s: float = Field(default=600.0, gt=0,
                                       description="A live migration running longer is aborted")
    # tuning
    resync_interval_s: float = Field(default=3.0, gt=0, description="Drift check period")
    heartbeat_interval_s: float = Field(default=10.0, gt=0, description="Maximum gap between reports")
    long_poll_wait_s: int = Field(default=25, ge=1, le=60)
    spec_channel: bool = Field(
        default=True, description="Take specs and send reports on the agent channel (one "
        "WebSocket); false, or a controller without it: long-poll and POST each report")
    default_stop_timeout_s: int = Field(default=60, ge=0)
    http_timeout_s: float = Field(default=10.0, gt=0)
    console_push_interval_s: float = Field(
        default=1.0, gt=0, description="How often guests' console output is pushed")
    metrics_listen: str = Field(
        default="", pattern=r"^(|(\[[0-9a-fA-F:]+\]|[0-9A-Za-z.:-]*):[0-9]{1,5})$",
        description="ADDR:PORT to serve Prometheus /metrics on (no auth: keep it on loopback "
                    "or a management network); empty: off", examples=["127.0.0.1:9464"])

    @property
    def router_netns_dir(self) -> Path:
        return self.netns_dir or (self.state_dir / "netns")


def load_config(path: str | Path) -> AgentConfig:
    """Read and validate the TOML file at ``path``; a bad file is a :class:`PermanentError`."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        unknown = sorted(set(data) - set(AgentConfig.model_fields))
        if unknown:
            # a newer rig or installer may pass keys this agent does not know: say so, go on
            logging.getLogger(__name__).warning("config %s: ignoring unknown keys %s", path, unknown)
            data = {k: v for k, v in data.items() if k not in unknown}
        return AgentConfig.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise PermanentError(f"config {path}: {exc}") from None
