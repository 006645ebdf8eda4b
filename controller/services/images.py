"""Images: import (from a controller-local file or an http(s) URL) into the image store.

Import is asynchronous: the row is created in status Creating, the copy runs
after the answer, and the status becomes Available or Error (with the reason,
which starts with an ECS-style code). The copy is streamed into a temporary
file in the store while its sha256 is computed, inspected with ``qemu-img
info -f <format>`` (never probed), and renamed into place. An image that
names a backing file or an external data file is refused: the agent would
otherwise read a file of the hypervisor's choosing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError

from controller import ids
from controller.config import Settings
from controller.db import Database
from controller.errors import Conflict, InvalidParameter, NotFound
from controller.models import Disk, Image
from controller.schemas import images as schema
from controller.services.common import get_or_404, paginate
from controller.tenancy import (
    ALL_PROJECTS, current_principal, require_admin_for, require_project_writable,
)

log = logging.getLogger(__name__)

CHUNK = 1024 * 1024
GIB = 1024 ** 3
QCOW2_MAGIC = b"QFI\xfb"
QEMU_IMG_TIMEOUT_S = 60


class ImageRefused(Exception):
    """The file is not an acceptable image; ``code`` is ECS-style."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def inspect_image(path: Path, fmt: str) -> dict:
    """``qemu-img info`` with an explicit format; refuse backing and external data files."""
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if fmt == "raw" and magic == QCOW2_MAGIC:
        raise ImageRefused("InvalidImage.FormatMismatch", "format is raw but the file is qcow2")
    try:
        proc = subprocess.run(["qemu-img", "info", "--output=json", "-f", fmt, str(path)],
                              capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT_S,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageRefused("InvalidImage.Unreadable", f"qemu-img info failed: {exc}") from None
    if proc.returncode != 0:
        raise ImageRefused("InvalidImage.Malformed",
                           f"not a valid {fmt} image: {proc.stderr.strip()[:500]}")
    info = json.loads(proc.stdout)
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise ImageRefused("InvalidImage.BackingFile",
                           f"the image names a backing file ({info.get('backing-filename')!r})")
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        raise ImageRefused("InvalidImage.ExternalDataFile",
                           f"the image names an external data file ({data['data-file']!r})")
    return info


def create_image(db: Database, settings: Settings, req: schema.ImageCreate) -> schema.Image:
    """Record the import (status Creating); ``run_import`` does the work afterwards.

    A local source is inspected at once, so a refused file is a 400 and
    nothing is created; the copy is inspected again (it is what is served).
    """
    if req.source_path is not None:
        require_admin_for("source_path", "importing a file of the controller's own disk")
        path = Path(req.source_path)
        if not path.is_absolute() or not path.is_file() or not os.access(path, os.R_OK):
            raise InvalidParameter("InvalidImage.SourceNotFound", "source_path",
                                   f"{req.source_path!r} is not a readable file on the controller")
        try:
            inspect_image(path, req.format)
        except ImageRefused as exc:
            raise InvalidParameter(exc.code, "source_path", exc.message) from None
    try:
        with db.write() as session:
            if name_taken(session, req.name):
                raise _duplicate(req.name)
            image = Image(id=ids.new_id("image"), name=req.name, description=req.description,
                          format=req.format, source=req.source_path or req.source_url,
                          min_disk_gib=req.min_disk_gib, status="Creating")
            session.add(image)
            session.flush()
            return schema.Image.model_validate(image)
    except IntegrityError:
        raise _duplicate(req.name) from None


def run_import(db: Database, settings: Settings, image_id: str) -> None:
    """Copy, hash, inspect and publish one image; never raises (the status says it)."""
    with db.read() as session:
        image = session.get(Image, image_id)
        if image is None or image.status != "Creating":
            return
        fmt, source = image.format, image.source
    store = settings.effective_image_store_dir
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / f".{image_id}.part"
    final = store / f"{image_id}.{fmt}"
    try:
        try:
            digest, size = _copy_source(source, tmp, image_id)
        finally:
            _PROGRESS.pop(image_id, None)
        info = inspect_image(tmp, fmt)
        os.replace(tmp, final)
    except ImageRefused as exc:
        _fail(db, image_id, f"{exc.code}: {exc.message}")
        tmp.unlink(missing_ok=True)
        return
    except Exception as exc:  # noqa: BLE001 - any failure ends in status Error
        log.warning("import of image %s failed: %s", image_id, exc)
        _fail(db, image_id, f"InvalidImage.ImportFailed: {exc}")
        tmp.unlink(missing_ok=True)
        return
    virtual = int(info.get("virtual-size") or size)
    with db.write() as session:
        image = session.get(Image, image_id)
        if image is None:  # deleted meanwhile
            final.unlink(missing_ok=True)
            return
        image.sha256, image.size_bytes, image.virtual_size_bytes = digest, size, virtual
        image.min_disk_gib = max(image.min_disk_gib or 0, math.ceil(virtual / GIB), 1)
        image.path = str(final)
        image.status, image.status_reason = "Available", ""
    log.info("image %s available (%d bytes, sha256 %s)", image_id, size, digest)


SPARSE_BLOCK = 64 * 1024
_ZEROS = bytes(SPARSE_BLOCK)


def _write_sparse(out, chunk: bytes) -> None:
    """Write ``chunk``, seeking over all-zero 64 KiB blocks so a sparse image stays sparse."""
    view = memoryview(chunk)
    for i in range(0, len(view), SPARSE_BLOCK):
        block = view[i:i + SPARSE_BLOCK]
        if block == _ZEROS[:len(block)]:
            out.seek(len(block), os.SEEK_CUR)
        else:
            out.write(block)


# Bytes copied so far by the imports running in this process: image id -> (done, total).
# Shown in the image's view while it is Creating (``miniecs image import --wait``).
_PROGRESS: dict[str, tuple[int, int | None]] = {}


def import_progress(image_id: str) -> tuple[int, int | None] | None:
    return _PROGRESS.get(image_id)


def with_progress(view: schema.Image) -> schema.Image:
    got = _PROGRESS.get(view.id) if view.status == "Creating" else None
    if got is None:
        return view
    return view.model_copy(update={"progress_bytes": got[0], "source_size_bytes": got[1]})


def _copy_source(source: str, dest: Path, image_id: str = "") -> tuple[str, int]:
    sha = hashlib.sha256()
    size = 0
    with open(dest, "wb") as out:
        if source.startswith(("http://", "https://")):
            import httpx  # only an import from a URL needs it (~0.1 s of CPU at start)

            with httpx.stream("GET", source, follow_redirects=True, timeout=60) as resp:
                resp.raise_for_status()
                length = resp.headers.get("content-length")
                total = int(length) if length and length.isdigit() else None
                _PROGRESS[image_id] = (0, total)
                for chunk in resp.iter_bytes(CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
                    _write_sparse(out, chunk)
                    _PROGRESS[image_id] = (size, total)
        else:
            with open(source, "rb") as src:
                total = os.fstat(src.fileno()).st_size
                _PROGRESS[image_id] = (0, total)
                while chunk := src.read(CHUNK):
                    sha.update(chunk)
                    size += len(chunk)
                    _write_sparse(out, chunk)
                    _PROGRESS[image_id] = (size, total)
        out.truncate(size)  # a trailing hole still counts in the file's size
        out.flush()
        os.fsync(out.fileno())
    return sha.hexdigest(), size


def _fail(db: Database, image_id: str, reason: str) -> None:
    with db.write() as session:
        image = session.get(Image, image_id)
        if image is not None:
            image.status, image.status_reason = "Error", reason[:4000]


def fail_interrupted_imports(db: Database) -> int:
    """At start-up: imports left in Creating by a previous process will never finish."""
    with db.write() as session:
        # Exports from a snapshot are finished by the exporting host, not by this process.
        stuck = list(session.scalars(select(Image).where(
            Image.status == "Creating", Image.source.not_like("snapshot:%"),
            Image.source.not_like("transfer:%"))))
        for image in stuck:
            image.status = "Error"
            image.status_reason = "InvalidImage.ImportInterrupted: the controller restarted"
        return len(stuck)


def get_image(db: Database, image_id: str) -> schema.Image:
    with db.read() as session:
        image = get_or_404(session, Image, image_id, "InvalidImageId.NotFound", "image_id")
        if image.source.startswith("transfer:"):  # internal copies are not images to users
            raise NotFound("InvalidImageId.NotFound", f"image {image_id!r} does not exist",
                           "image_id")
        return with_progress(schema.Image.model_validate(image))


def image_file(db: Database, image_id: str) -> Path | None:
    with db.read() as session:
        image = session.get(Image, image_id)
        return Path(image.path) if image and image.status == "Available" and image.path else None


def list_images(db: Database, max_results: int, next_token: str | None,
                status: str | None = None) -> schema.ImageList:
    stmt = select(Image).where(Image.source.not_like("transfer:%"))  # internal copies
    if status:
        stmt = stmt.where(Image.status == status)
    with db.read() as session:
        rows, token = paginate(session, stmt, Image, max_results, next_token)
        return schema.ImageList(items=[with_progress(schema.Image.model_validate(m))
                                       for m in rows], next_token=token)


def delete_image(db: Database, image_id: str) -> None:
    """Refused while any disk uses it, or while it is being imported."""
    with db.write() as session:
        image = get_or_404(session, Image, image_id, "InvalidImageId.NotFound", "image_id",
                           for_update=True)
        if image.source.startswith("transfer:"):  # internal: removed with its disk's copy
            raise NotFound("InvalidImageId.NotFound", f"image {image_id!r} does not exist",
                           "image_id")
        require_project_writable(image)
        if image.status == "Creating":
            raise Conflict("InvalidImageId.IncorrectStatus",
                           f"image {image_id} is still being imported", "image_id")
        user = session.scalar(select(Disk.instance_id).where(Disk.image_id == image_id)
                              .execution_options(**ALL_PROJECTS))  # a public image: any project
        if user:
            raise Conflict("DependencyViolation.Instance",
                           f"image {image_id} is used by instance {user}", "image_id")
        path = image.path
        session.delete(image)
    if path:
        Path(path).unlink(missing_ok=True)
    log.info("image %s deleted at %s", image_id, datetime.now(UTC).isoformat())


def name_taken(session, name: str) -> bool:
    """Whether a new image called ``name`` would clash with one its creator can see.

    Image names are unique per project, and public images (no project) among
    themselves: a tenant's new image may not take the name of one of its own or of
    a public image (both in its listing); an admin's (public) one, of another public
    image. Another project's names are never looked at, so a refusal tells nothing.
    """
    principal = current_principal()
    project = principal.project if principal is not None else None
    stmt = select(Image.id).where(Image.name == name)
    if project is None:
        stmt = stmt.where(Image.project_id.is_(None))
    else:
        stmt = stmt.where(or_(Image.project_id == project, Image.project_id.is_(None)))
    return session.scalar(stmt.limit(1).execution_options(**ALL_PROJECTS)) is not None


def _duplicate(name: str) -> Conflict:
    return Conflict("InvalidImageName.Duplicated", f"an image named {name!r} exists", "name")
