"""Host removal: an operator takes a hypervisor out of the region.

Refused while the host holds anything a tenant owns there: an instance not yet
Deleted (a Deleting one still has its domain), a disk (local qcow2), a snapshot
(held in the host's local store), a pending storage operation. Otherwise the
host row goes, and with it the agent's token (its next call is a 401). The
history that points at the host by foreign key goes too: the Deleted instances
placed there (their NICs, disks and operations cascade) and its finished
operations.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, func, select

from controller.db import Database
from controller.errors import Conflict
from controller.models import Disk, Host, Instance, Operation
from controller.models_storage import Snapshot, StorageOperation
from controller.services import host_tokens
from controller.services.common import get_or_404

log = logging.getLogger(__name__)


def delete_host(db: Database, host_id: str) -> None:
    with db.write() as session:
        host = get_or_404(session, Host, host_id, "InvalidHostId.NotFound", "host_id",
                          for_update=True)
        for code, what, stmt in (
                ("DependencyViolation.Host.Instances", "instance(s)",
                 select(Instance.id).where(Instance.host_id == host_id,
                                           Instance.deleted_at.is_(None))),
                ("DependencyViolation.Host.Disks", "disk(s)",
                 select(Disk.id).where(Disk.host_id == host_id)),
                ("DependencyViolation.Host.Snapshots", "snapshot(s) in its local store",
                 select(Snapshot.id).where(Snapshot.host_id == host_id)),
                ("DependencyViolation.Host.Operations", "pending storage operation(s)",
                 select(StorageOperation.id).where(StorageOperation.host_id == host_id,
                                                   StorageOperation.outcome == "pending"))):
            count = session.scalar(select(func.count()).select_from(stmt.subquery()))
            if count:
                shown = ", ".join(session.scalars(stmt.limit(5)))
                raise Conflict(code, f"host {host.name} ({host_id}) still holds {count} {what}: "
                               f"{shown}{', ...' if count > 5 else ''}; move or delete them "
                               "first", "host_id")
        gone = select(Instance.id).where(Instance.host_id == host_id)
        session.execute(delete(Operation).where(
            (Operation.host_id == host_id) | Operation.instance_id.in_(gone)))
        session.execute(delete(Instance).where(Instance.host_id == host_id)
                        .execution_options(synchronize_session=False))
        session.execute(delete(StorageOperation).where(StorageOperation.host_id == host_id))
        session.delete(host)
        log.info("host %s (%s) removed from the region", host.name, host_id)
    host_tokens.tokens_changed(db)  # its token is refused from now on
