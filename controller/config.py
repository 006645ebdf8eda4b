"""Controller settings: one pydantic-settings class, read from ``MINIECS_*`` variables."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the controller can be told. Env prefix ``MINIECS_``."""

    model_config = SettingsConfigDict(env_prefix="MINIECS_", extra="ignore")

    state_dir: Path = Field(default=Path("/var/lib/miniecs-controller"),
                            description="Database (SQLite default) and image store live here")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<state_dir>/controller.db")
    listen: str = Field(default="127.0.0.1:8080", description="ADDR:PORT for `serve`")
    cpu_overcommit: float = Field(default=4.0, gt=0, description="vCPUs scheduled per host vCPU")
    memory_overcommit: float = Field(default=1.0, gt=0)
    disk_overcommit: float = Field(default=1.0, gt=0)
    image_store_dir: Path | None = Field(default=None, description="Default <state_dir>/images")
    spec_wait_max_s: float = Field(default=60.0, gt=0, description="Longest long-poll of a spec")
    spec_poll_interval_s: float = Field(
        default=0.5, gt=0,
        description="DB re-check period while long-polling (sees other processes)")
    spec_coalesce_s: float = Field(
        default=0.1, ge=0, le=5,
        description="A woken spec long-poll waits this long for more changes before answering")
    spec_cache_max_age_s: float = Field(
        default=300.0, ge=0,
        description="Longest a compiled spec is served unchanged while its generation stays")
    spec_cache_check: bool = Field(
        default=False,
        description="Compile again on every cache hit and fail when they differ (tests)")
    heartbeat_timeout_s: float = Field(default=30.0, gt=0,
                                       description="A host silent this long is marked down")
    stop_timeout_s: int = Field(default=60, ge=1,
                                description="Graceful (ACPI) shutdown wait before power-off")
    guest_mtu: int = Field(default=1450, ge=576, le=9000,
                           description="MTU of guest NICs (room for VXLAN overhead)")
    eip_pool: str = Field(
        default="", description="Public addresses for elastic IPs: comma-separated CIDRs or "
        "ranges (A-B), routed to the hosts' uplinks; empty: no EIPs",
        examples=["203.0.113.128/26,198.51.100.10-198.51.100.20"])
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate to serve HTTPS with; default <state_dir>/tls/"
                                  "server.pem when `init --tls` made one")
    tls_key_file: Path | None = Field(default=None, description="PEM key of tls_cert_file")
    sqlite_busy_timeout_ms: int = Field(default=30000, ge=0)
    placement_policy: Literal["spread", "pack"] = Field(
        default="spread", description="Region default when a create names no placement: "
        "spread (least loaded host) or pack (most loaded host that fits)")
    migration_stall_timeout_s: float = Field(
        default=900.0, gt=0, description="A migration that waits this long in a phase where "
        "giving up is safe (freezing, exporting, importing) is marked failed")
    event_retention_days: float = Field(
        default=30.0, ge=0, description="Events older than this are deleted; 0: no age limit")
    event_retention_max_rows: int = Field(
        default=1_000_000, ge=0, description="At most this many events are kept; 0: no limit")
    event_retention_interval_s: float = Field(default=600.0, gt=0,
                                              description="How often retention runs")
    deleted_instance_retention_days: float = Field(
        default=7.0, ge=0, description="Deleted instances stay listed (`--status Deleted`) "
        "this long after their delete, then their rows are purged (their events stay, under "
        "the event retention); 0: kept for ever")
    metrics_token: str | None = Field(
        default=None, repr=False, description="Bearer token that may read /metrics (and "
        "nothing else); admin tokens may read it too")
    metrics_listen: str | None = Field(
        default=None, description="ADDR:PORT of an extra listener serving /metrics without "
        "authentication (e.g. 127.0.0.1:9180); default none")
    event_follow_poll_s: float = Field(
        default=1.0, gt=0, description="DB re-check period of an events follow long-poll")

    @cached_property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'controller.db'}"

    @cached_property
    def effective_image_store_dir(self) -> Path:
        return self.image_store_dir or self.state_dir / "images"

    @property
    def effective_tls(self) -> tuple[Path, Path] | None:
        """(certificate, key) to serve HTTPS with, or None for plain HTTP."""
        if self.tls_cert_file and self.tls_key_file:
            return self.tls_cert_file, self.tls_key_file
        cert, key = self.state_dir / "tls" / "server.pem", self.state_dir / "tls" / "server-key.pem"
        return (cert, key) if cert.exists() and key.exists() else None

    @property
    def listen_host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return (host.strip("[]") or "127.0.0.1", int(port))
