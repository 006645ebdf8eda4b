"""Key pairs: import an OpenSSH public key, or generate an ed25519 pair (private key shown once)."""

from __future__ import annotations

import base64
import hashlib

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from controller import ids
from controller.db import Database
from controller.errors import Conflict, InvalidParameter
from controller.models import Instance, KeyPair
from controller.schemas import key_pairs as schema
from controller.services.common import get_or_404, paginate
from controller.tenancy import target_project


def parse_public_key(text: str) -> tuple[str, str, str]:
    """Validate an OpenSSH public key line; returns (normalised line, key type, fingerprint)."""
    parts = text.strip().split()
    if len(parts) < 2 or "\n" in text.strip():
        raise InvalidParameter("InvalidKeyPair.Malformed", "public_key",
                               "public_key must be one OpenSSH line: '<type> <base64> [comment]'")
    key_type, blob = parts[0], parts[1]
    from cryptography.hazmat.primitives import serialization  # not on the start-up path

    try:
        serialization.load_ssh_public_key(f"{key_type} {blob}".encode())
        raw = base64.b64decode(blob, validate=True)
    except (ValueError, TypeError) as exc:
        raise InvalidParameter("InvalidKeyPair.Malformed", "public_key",
                               f"public_key does not parse: {exc}") from None
    digest = base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")
    comment = " ".join(parts[2:])
    line = f"{key_type} {blob}" + (f" {comment}" if comment else "")
    return line, key_type, f"SHA256:{digest}"


def generate_key_pair(comment: str) -> tuple[str, str]:
    """A new ed25519 pair as (OpenSSH public line, OpenSSH private key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return f"{public} {comment}", private


def create_key_pair(db: Database, req: schema.KeyPairCreate) -> schema.KeyPairCreated:
    private_key = None
    if req.public_key is None:
        public_line, private_key = generate_key_pair(req.name)
    else:
        public_line = req.public_key
    line, key_type, fingerprint = parse_public_key(public_line)
    try:
        with db.write() as session:
            project = target_project()  # names are unique per project, not region-wide
            if session.scalar(select(KeyPair.id).where(KeyPair.project_id == project,
                                                       KeyPair.name == req.name)):
                raise _duplicate(req.name)
            pair = KeyPair(id=ids.new_id("key_pair"), project_id=project, name=req.name,
                           public_key=line, key_type=key_type, fingerprint=fingerprint)
            session.add(pair)
            session.flush()
            view = schema.KeyPair.model_validate(pair)
    except IntegrityError:
        raise _duplicate(req.name) from None
    return schema.KeyPairCreated(**view.model_dump(), private_key=private_key)


def get_key_pair(db: Database, key_pair_id: str) -> schema.KeyPair:
    with db.read() as session:
        return schema.KeyPair.model_validate(
            get_or_404(session, KeyPair, key_pair_id, "InvalidKeyPair.NotFound", "key_pair_id"))


def list_key_pairs(db: Database, max_results: int, next_token: str | None) -> schema.KeyPairList:
    with db.read() as session:
        rows, token = paginate(session, select(KeyPair), KeyPair, max_results, next_token)
        return schema.KeyPairList(items=[schema.KeyPair.model_validate(k) for k in rows],
                                  next_token=token)


def delete_key_pair(db: Database, key_pair_id: str) -> None:
    """Refused while an instance that is not Deleted uses it (its spec carries the key)."""
    with db.write() as session:
        pair = get_or_404(session, KeyPair, key_pair_id, "InvalidKeyPair.NotFound",
                          "key_pair_id", for_update=True)
        user = session.scalar(select(Instance.id).where(Instance.key_pair_id == key_pair_id,
                                                        Instance.deleted_at.is_(None)))
        if user:
            raise Conflict("DependencyViolation.Instance",
                           f"key pair {key_pair_id} is used by instance {user}", "key_pair_id")
        session.delete(pair)


def _duplicate(name: str) -> Conflict:
    return Conflict("InvalidKeyPairName.Duplicate", f"a key pair named {name!r} exists", "name")
