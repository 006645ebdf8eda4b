"""Key pairs: an SSH public key injected into instances."""

from __future__ import annotations

from pydantic import Field

from controller.schemas.common import CreatedAt, Name, NextToken, Request, View


class KeyPairCreate(Request):
    """Import ``public_key``; or leave it out to have an ed25519 pair generated."""

    name: Name = Field(description="Key pair name (unique)", examples=["kp-demo"])
    public_key: str | None = Field(
        default=None, max_length=16384, description="OpenSSH public key line to import",
        examples=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0... me@laptop"])


class KeyPair(View):
    id: str = Field(description="Key pair id", examples=["kp-1a2b3c4d5e6f7g8h9i0j"])
    name: str = Field(description="Key pair name", examples=["kp-demo"])
    key_type: str = Field(description="ssh-ed25519, ssh-rsa, ecdsa-...", examples=["ssh-ed25519"])
    fingerprint: str = Field(description="OpenSSH SHA256 fingerprint",
                             examples=["SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"])
    public_key: str = Field(description="OpenSSH public key line",
                            examples=["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG0... kp-demo"])
    created_at: CreatedAt


class KeyPairCreated(KeyPair):
    private_key: str | None = Field(
        default=None, description="OpenSSH private key of a generated pair; shown only once",
        examples=["-----BEGIN OPENSSH PRIVATE KEY-----\n...\n-----END OPENSSH PRIVATE KEY-----\n"])


class KeyPairList(View):
    items: list[KeyPair] = Field(description="Key pairs on this page")
    next_token: NextToken = None
