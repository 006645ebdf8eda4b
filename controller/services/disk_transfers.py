"""A disk made from a snapshot held on another host: the snapshot travels through the store.

A snapshot is an internal snapshot inside its disk's file on one host, so a disk made
from it on another host needs a copy. The controller records a hidden *transfer image*
(an ``Image`` row with ``source = "transfer:<disk id>"``, never listed) and an
``export_snapshot`` storage operation on the snapshot's host, exactly like an image made
from a snapshot: that host uploads the flattened snapshot (sha256 checked on receipt).
Once the transfer image is Available, the target host's spec carries it as the disk's
``source_image``; that host downloads it (resumable, sha256 verified, inspected as qcow2
with no backing or data file), grows it to the disk's size and renames it into place.
When the target host reports the disk, the transfer image and its store file are
removed. If the export fails, the disk goes to Error with the exporting host's reason;
if the disk is deleted first, the transfer is cancelled and removed.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from agent import spec
from controller import ids
from controller.models import Disk, Image
from controller.models_storage import Snapshot, StorageOperation
from controller.services.notify import bump_generation

log = logging.getLogger(__name__)

PREFIX = "transfer:"


def is_transfer(source: str | None) -> bool:
    return bool(source and source.startswith(PREFIX))


def start_transfer(session: Session, snap: Snapshot, disk: Disk) -> Image:
    """Record the transfer image and the export on the snapshot's host."""
    image = Image(id=ids.new_id("image"), name=f"transfer-{disk.id}",
                  description=f"copy of snapshot {snap.id} for disk {disk.id} (internal)",
                  format="qcow2", source=f"{PREFIX}{disk.id}", min_disk_gib=snap.disk_size_gib,
                  status="Creating")
    session.add(image)
    session.add(StorageOperation(
        id=ids.new_id("operation"), host_id=snap.host_id, kind="export_snapshot",
        disk_id=snap.disk_id, snapshot_id=snap.id, image_id=image.id, outcome="pending"))
    bump_generation(session, snap.host_id)
    return image


def transfer_image(session: Session, disk_id: str) -> Image | None:
    return session.scalar(select(Image).where(Image.source == f"{PREFIX}{disk_id}"))


def host_may_download(session: Session, host_id: str, image_id: str) -> bool:
    """True when ``image_id`` is the transfer of a disk that lives on ``host_id``."""
    image = session.get(Image, image_id)
    if image is None or not is_transfer(image.source):
        return False
    disk = session.get(Disk, image.source.removeprefix(PREFIX))
    return disk is not None and disk.host_id == host_id and disk.status == "Creating"


def source_image_spec(session: Session, disk: Disk) -> spec.ImageSpec | None:
    """The disk's transfer image in the target host's spec, once it is in the store."""
    if disk.status != "Creating" or not disk.source_snapshot_id:
        return None
    image = transfer_image(session, disk.id)
    if image is None or image.status != "Available":
        return None
    return spec.ImageSpec(id=image.id, sha256=image.sha256 or "", format="qcow2",
                          size_bytes=image.size_bytes or 0,
                          virtual_size_bytes=image.virtual_size_bytes or 0,
                          url=f"/api/v1/agent/images/{image.id}/data")


def transfer_failed(session: Session, image: Image) -> None:
    """The export of a transfer image failed: its disk goes to Error with the reason."""
    disk = session.get(Disk, image.source.removeprefix(PREFIX))
    if disk is not None and disk.status == "Creating":
        disk.status = "Error"
        disk.status_reason = (f"copying snapshot {disk.source_snapshot_id} from its host "
                              f"failed: {image.status_reason}")[:4000]
        bump_generation(session, disk.host_id)
    finish_transfer(session, image.source.removeprefix(PREFIX), "transfer failed")


def finish_transfer(session: Session, disk_id: str, why: str) -> None:
    """Remove the disk's transfer image (row and store file); cancel its export if pending."""
    image = transfer_image(session, disk_id)
    if image is None:
        return
    now = datetime.now(UTC)
    for op in session.scalars(select(StorageOperation).where(
            StorageOperation.image_id == image.id, StorageOperation.outcome == "pending")):
        op.outcome, op.message, op.finished_at = "cancelled", why, now
        bump_generation(session, op.host_id)
    # the target host stops needing it in the same transaction
    if image.path:
        Path(image.path).unlink(missing_ok=True)
    session.delete(image)
    log.info("transfer image %s of disk %s removed (%s)", image.id, disk_id, why)
