"""The agent's state directory (layout in docs/agent-api.md) and its small versioned JSON files."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

STATE_VERSION = 1
_SAFE_ID = re.compile(r"^[a-z]{1,4}-[A-Za-z0-9]{1,64}$")


def safe_id(value: str) -> str:
    """An id fit to be a file name under the state dir (never a path, never '..')."""
    if not _SAFE_ID.match(value):
        raise ValueError(f"not a miniecs id: {value!r}")
    return value


class StateDir:
    """Paths under the agent's state directory; nothing outside it is ever touched."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).absolute()

    def ensure(self) -> None:
        for d in (self.root, self.images_dir, self.instances_dir):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    host_json = property(lambda self: self.root / "host.json")
    images_dir = property(lambda self: self.root / "images")
    instances_dir = property(lambda self: self.root / "instances")
    operations_json = property(lambda self: self.root / "operations.json")
    compute_json = property(lambda self: self.root / "compute.json")
    guest_power_json = property(lambda self: self.root / "guest-power.json")
    spec_json = property(lambda self: self.root / "spec.json")
    virt_type_json = property(lambda self: self.root / "virt-type.json")

    def image_path(self, sha256: str, fmt: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256) or fmt not in ("qcow2", "raw"):
            raise ValueError(f"bad image key {sha256!r}.{fmt!r}")
        return self.images_dir / f"{sha256}.{fmt}"

    def instance_dir(self, instance_id: str) -> Path:
        return self.instances_dir / safe_id(instance_id)

    def disk_path(self, instance_id: str, disk_id: str) -> Path:
        return self.instance_dir(instance_id) / f"{safe_id(disk_id)}.qcow2"

    def seed_path(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / "seed.iso"

    def console_path(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / "console.log"


def write_json_atomic(path: Path, data: dict[str, Any], mode: int = 0o644) -> None:
    """Write ``{"version": 1, **data}`` to ``path`` with tmp + fsync + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as f:
            json.dump({"version": STATE_VERSION, **data}, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_json(path: Path) -> dict[str, Any] | None:
    """The content of a versioned JSON file, or None when absent, unreadable or of another version."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        return None
    return data
