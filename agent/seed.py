"""The NoCloud seed: meta-data, user-data and network-config v2 on an ISO labelled ``cidata``.

Rendering is pure (``render_seed``); ``write_seed_iso`` writes the ISO
atomically and only when its content changed. See docs/seed.md for the
formats and the merging rules.
"""

from __future__ import annotations

import email.policy
import io
import os
import tempfile
from email.message import EmailMessage
from email.parser import Parser
from pathlib import Path

import pycdlib
import yaml

from agent import faults
from agent.errors import TemporaryError
from agent.spec import InstanceSpec

VOLUME_LABEL = "cidata"
# ISO 9660 names (level 1 safe) with the real names in Rock Ridge and Joliet.
_ISO_NAMES = {"meta-data": "METADATA.;1", "user-data": "USERDATA.;1",
              "network-config": "NETWORKC.;1"}

# First line of a user-data document -> MIME type cloud-init gives it.
_USER_DATA_TYPES = (
    ("#cloud-config-archive", "cloud-config-archive"),
    ("#cloud-config", "cloud-config"),
    ("#!", "x-shellscript"),
    ("#include", "x-include-url"),
    ("#cloud-boothook", "cloud-boothook"),
    ("#part-handler", "part-handler"),
    ("## template: jinja", "jinja2"),
)


def _dump(data: object) -> str:
    # width: never fold a long ssh key over two lines
    return yaml.safe_dump(data, default_flow_style=False, sort_keys=False, width=1 << 20,
                          allow_unicode=True)


def render_meta_data(instance: InstanceSpec) -> str:
    return _dump({"instance-id": instance.id, "local-hostname": instance.hostname})


def render_network_config(instance: InstanceSpec) -> str:
    """network-config v2: one ethernet per NIC matched by MAC; the first NIC holds the default route."""
    ethernets: dict[str, dict] = {}
    for n, nic in enumerate(instance.nics):
        eth: dict = {"match": {"macaddress": nic.mac.lower()}, "set-name": f"eth{n}",
                     "mtu": nic.mtu, "addresses": [f"{nic.ip}/{nic.prefix_len}"]}
        if n == 0:
            eth["routes"] = [{"to": "0.0.0.0/0", "via": nic.gateway}]
            eth["nameservers"] = {"addresses": [nic.gateway]}
        ethernets[f"eth{n}"] = eth
    return _dump({"version": 2, "ethernets": ethernets})


def _base_cloud_config(instance: InstanceSpec) -> dict:
    cc: dict = {"hostname": instance.hostname}
    if instance.ssh_authorized_keys:
        cc["ssh_authorized_keys"] = list(instance.ssh_authorized_keys)
    return cc


def _merge_cloud_config(user: dict, instance: InstanceSpec) -> dict:
    """The user's cloud-config with the key pair's keys added (theirs kept, no duplicates)."""
    merged = dict(user)
    merged.setdefault("hostname", instance.hostname)
    keys = merged.get("ssh_authorized_keys") or []
    if isinstance(keys, str):
        keys = [keys]
    keys = list(keys)
    for k in instance.ssh_authorized_keys:
        if k not in keys:
            keys.append(k)
    if keys:
        merged["ssh_authorized_keys"] = keys
    return merged


def _cloud_config_text(cc: dict) -> str:
    return "#cloud-config\n" + _dump(cc)


def _user_parts(user_data: str) -> list[tuple[str, str, str]]:
    """The user's user-data as (content type, body, transfer encoding) parts, verbatim."""
    head = user_data.lstrip()[:200].lower()
    if head.startswith("content-type:") or head.startswith("mime-version:"):
        msg = Parser(policy=email.policy.compat32).parsestr(user_data)
        if msg.is_multipart():
            return [(p.get_content_type(), p.get_payload(decode=False),
                     p.get("Content-Transfer-Encoding", "8bit")) for p in msg.walk()
                    if not p.is_multipart()]
        return [(msg.get_content_type(), msg.get_payload(decode=False),
                 msg.get("Content-Transfer-Encoding", "8bit"))]
    for prefix, subtype in _USER_DATA_TYPES:
        if user_data.startswith(prefix):
            return [(f"text/{subtype}", user_data, "8bit")]
    return [("text/plain", user_data, "8bit")]


def render_user_data(instance: InstanceSpec) -> str:
    """user-data: a merged ``#cloud-config``, or a MIME multipart around the user's own parts."""
    ud = instance.user_data
    if not ud or not ud.strip():
        return _cloud_config_text(_base_cloud_config(instance))
    if ud.startswith("#cloud-config") and not ud.startswith("#cloud-config-archive"):
        try:
            user = yaml.safe_load(ud)
        except yaml.YAMLError:
            user = None
        if user is None and not ud.strip().splitlines()[1:]:
            user = {}
        if isinstance(user, dict):
            return _cloud_config_text(_merge_cloud_config(user, instance))
        # Not a mapping: let cloud-init judge it, next to our own configuration.
    return _mime_multipart(_cloud_config_text(_base_cloud_config(instance)), _user_parts(ud))


def _mime_multipart(cloud_config: str, parts: list[tuple[str, str, str]]) -> str:
    outer = EmailMessage(policy=email.policy.compat32)
    outer["Content-Type"] = "multipart/mixed"
    outer["MIME-Version"] = "1.0"
    outer.set_boundary("==MINIECS-SEED-BOUNDARY==")
    for n, (ctype, body, cte) in enumerate([("text/cloud-config", cloud_config, "8bit"), *parts]):
        part = EmailMessage(policy=email.policy.compat32)
        part["Content-Type"] = f'{ctype}; charset="utf-8"' if ctype.startswith("text/") else ctype
        part["MIME-Version"] = "1.0"
        part["Content-Transfer-Encoding"] = cte
        part["Content-Disposition"] = f'attachment; filename="part-{n:03d}"'
        part.set_payload(body)
        outer.attach(part)
    return outer.as_string()


def render_seed(instance: InstanceSpec) -> dict[str, bytes]:
    """The three seed files by name."""
    return {"meta-data": render_meta_data(instance).encode(),
            "user-data": render_user_data(instance).encode(),
            "network-config": render_network_config(instance).encode()}


def read_seed_iso(path: str | Path) -> tuple[str, dict[str, bytes]]:
    """(volume label, files by Rock Ridge name) of an existing seed ISO."""
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files: dict[str, bytes] = {}
        for name, iso_name in _ISO_NAMES.items():
            buf = io.BytesIO()
            try:
                iso.get_file_from_iso_fp(buf, iso_path=f"/{iso_name}")
            except pycdlib.pycdlibexception.PyCdlibInvalidInput:
                continue
            files[name] = buf.getvalue()
        return label, files
    finally:
        iso.close()


def write_seed_iso(path: str | Path, files: dict[str, bytes]) -> bool:
    """Write the seed ISO at ``path`` atomically; returns False when it already holds ``files``."""
    path = Path(path)
    if path.exists():
        try:
            label, current = read_seed_iso(path)
            if label == VOLUME_LABEL and current == files:
                return False
        except Exception:  # unreadable: rewrite it
            pass
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=VOLUME_LABEL,
            sys_ident="LINUX")
    for name, data in files.items():
        iso.add_fp(io.BytesIO(data), len(data), f"/{_ISO_NAMES[name]}", rr_name=name,
                   joliet_path=f"/{name}")
    for stale in path.parent.glob(".seed.*.tmp"):  # left by a crash before the rename
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".seed.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            iso.write_fp(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        faults.point("seed.before_publish")
        os.replace(tmp, path)
        faults.point("seed.after_publish")
    except OSError as exc:
        raise TemporaryError(f"seed {path}: {exc}") from None
    finally:
        iso.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return True
