"""Bearer tokens: random, shown once, stored as sha256 hex."""

from __future__ import annotations

import hashlib
import secrets

ADMIN_PREFIX = "mecs_"
HOST_PREFIX = "mecsh_"
ENROLMENT_PREFIX = "mecse_"


def new_token(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
API_KEY_PREFIX = "mecsk_"
