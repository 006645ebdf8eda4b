"""Images made from a snapshot or from an instance's system disk.

The snapshot lives inside its disk's file on one host, so the image is made
there: the controller records the image (status Creating) and a one-shot
``export_snapshot`` storage operation in that host's spec. The agent writes a
flattened qcow2 of the snapshot (no backing file) and PUTs it, authenticated
with its host token, to ``/api/v1/agent/images/<id>/data`` with its sha256 in
``X-Content-SHA256``. The controller streams the body into a temporary file
of the image store while hashing it, checks the digest, inspects the file as
qcow2 (refusing backing and external data files, as for any import) and
renames it into place: the image becomes Available and can be served to
every host like an imported one. If the operation is reported failed, the
image goes to Error with the agent's reason.

From an instance, a snapshot of its system disk is taken first (kept and
listed like any snapshot, as ECS keeps an image's snapshots); the agent takes
it and exports it in the same pass.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controller import ids
from controller.config import Settings
from controller.db import Database
from controller.errors import Conflict, InvalidParameter, NotFound
from controller.models import Disk, Image, Instance
from controller.models_storage import Snapshot, StorageOperation
from controller.schemas import images as schema
from controller.schemas.snapshots import SnapshotCreate
from controller.services.common import get_or_404
from controller.services.images import GIB, ImageRefused, inspect_image, name_taken
from controller.services.notify import bump_generation
from controller.services.snapshots import take_snapshot

log = logging.getLogger(__name__)

SOURCE_PREFIX = "snapshot:"


def is_export(source: str | None) -> bool:
    return bool(source and source.startswith(SOURCE_PREFIX))


def create_image_from(db: Database, req: schema.ImageCreate) -> schema.Image:
    """Record the image (Creating) and the export operation on the snapshot's host."""
    try:
        with db.write() as session:
            if name_taken(session, req.name):
                raise _duplicate(req.name)
            snap = (_source_snapshot(session, req.snapshot_id) if req.snapshot_id
                    else _snapshot_of_instance(session, req.instance_id or "", req.name))
            image = Image(id=ids.new_id("image"), name=req.name, description=req.description,
                          format="qcow2", source=f"{SOURCE_PREFIX}{snap.id}",
                          min_disk_gib=req.min_disk_gib or snap.disk_size_gib, status="Creating")
            session.add(image)
            session.add(StorageOperation(
                id=ids.new_id("operation"), host_id=snap.host_id, kind="export_snapshot",
                disk_id=snap.disk_id, snapshot_id=snap.id, image_id=image.id,
                outcome="pending"))
            bump_generation(session, snap.host_id)
            session.flush()
            return schema.Image.model_validate(image)
    except IntegrityError:
        raise _duplicate(req.name) from None


def _source_snapshot(session: Session, snapshot_id: str) -> Snapshot:
    snap = get_or_404(session, Snapshot, snapshot_id, "InvalidSnapshotId.NotFound", "snapshot_id")
    if snap.status != "accomplished":
        raise Conflict("IncorrectSnapshotStatus", f"snapshot {snap.id} is {snap.status}",
                       "snapshot_id")
    return snap


def _snapshot_of_instance(session: Session, instance_id: str, image_name: str) -> Snapshot:
    inst = session.get(Instance, instance_id)
    if inst is None or inst.deleted_at is not None:
        raise NotFound("InvalidInstanceId.NotFound", f"instance {instance_id!r} does not exist",
                       "instance_id")
    system = session.scalar(select(Disk).where(Disk.instance_id == inst.id,
                                               Disk.role == "system"))
    if system is None:
        raise Conflict("IncorrectInstanceStatus", f"instance {inst.id} has no system disk",
                       "instance_id")
    # take_snapshot refuses an instance that is neither Running nor Stopped
    return take_snapshot(session, SnapshotCreate(
        disk_id=system.id, name=f"image {image_name}"[:128],
        description=f"system disk of {inst.id} for an image"))


def export_target(db: Database, settings: Settings, host_id: str, image_id: str) -> Path:
    """The temporary store file an upload goes to; 404 unless this host owes that image."""
    with db.read() as session:
        op = session.scalar(select(StorageOperation.id).where(
            StorageOperation.image_id == image_id, StorageOperation.host_id == host_id,
            StorageOperation.kind == "export_snapshot", StorageOperation.outcome == "pending"))
        image = session.get(Image, image_id)
        if op is None or image is None or image.status != "Creating":
            raise NotFound("InvalidImageId.NotFound",
                           f"image {image_id!r} is not being exported by this host", "image_id")
    store = settings.effective_image_store_dir
    store.mkdir(parents=True, exist_ok=True)
    return store / f".{image_id}.upload"


def publish_upload(db: Database, settings: Settings, image_id: str, tmp: Path, digest: str,
                   size: int, claimed: str) -> schema.Image:
    """Verify an uploaded export (sha256, qcow2 without backing/data file) and publish it."""
    try:
        if claimed.lower() != digest:
            raise InvalidParameter("InvalidImage.ChecksumMismatch", "X-Content-SHA256",
                                   f"received data has sha256 {digest}, not {claimed!r}")
        try:
            info = inspect_image(tmp, "qcow2")
        except ImageRefused as exc:
            raise InvalidParameter(exc.code, None, exc.message) from None
        final = settings.effective_image_store_dir / f"{image_id}.qcow2"
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    virtual = int(info.get("virtual-size") or size)
    with db.write() as session:
        image = session.get(Image, image_id)
        if image is None or image.status != "Creating":  # deleted or failed meanwhile
            final.unlink(missing_ok=True)
            raise NotFound("InvalidImageId.NotFound", f"image {image_id!r} is gone", "image_id")
        image.sha256, image.size_bytes, image.virtual_size_bytes = digest, size, virtual
        image.min_disk_gib = max(image.min_disk_gib or 0, math.ceil(virtual / GIB), 1)
        image.path = str(final)
        image.status, image.status_reason = "Available", ""
        # The publish is the export's commit point: the operation leaves the host's spec
        # now, so an agent killed between its upload and its report never runs it again.
        now = datetime.now(UTC)
        for op in session.scalars(select(StorageOperation).where(
                StorageOperation.image_id == image_id, StorageOperation.outcome == "pending")):
            op.outcome, op.finished_at = "succeeded", now
            op.message = f"snapshot {op.snapshot_id} exported as image {image_id}"
            bump_generation(session, op.host_id)
        from controller.services import disk_transfers  # import cycle (disks → transfers)

        if disk_transfers.is_transfer(image.source):
            # the disk being made from it now names the image in its host's spec
            target = session.get(Disk, image.source.removeprefix(disk_transfers.PREFIX))
            if target is not None and target.host_id:
                bump_generation(session, target.host_id)
        log.info("image %s exported (%d bytes, sha256 %s)", image_id, size, digest)
        return schema.Image.model_validate(image)


def apply_export_outcome(session: Session, op: StorageOperation) -> None:
    """An export reported final: the image is Error unless its upload published it."""
    if op.kind != "export_snapshot" or not op.image_id:
        return
    image = session.get(Image, op.image_id)
    if image is None or image.status != "Creating":
        return
    image.status = "Error"
    image.status_reason = ("InvalidImage.ExportFailed: " + (
        op.message if op.outcome != "succeeded" else "the host finished without an upload"
    ))[:4000]
    from controller.services import disk_transfers  # import cycle (disks → transfers)

    if disk_transfers.is_transfer(image.source):
        disk_transfers.transfer_failed(session, image)


class Hasher:
    """sha256 and byte count of a stream as it is written to a file."""

    def __init__(self, path: Path) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self.fh = open(path, "wb")  # noqa: SIM115 - closed by close()

    def write(self, chunk: bytes) -> None:
        self.sha.update(chunk)
        self.size += len(chunk)
        self.fh.write(chunk)

    def close(self) -> str:
        self.fh.flush()
        self.fh.close()
        return self.sha.hexdigest()


def _duplicate(name: str) -> Conflict:
    return Conflict("InvalidImageName.Duplicated", f"an image named {name!r} exists", "name")
