"""Validators for user input, shared by the request schemas and the services.

Each raises ``InvalidParameter`` with an ECS-style code naming the field;
``controller.schemas.common`` turns them into pydantic validators so a bad
request is refused before any service runs (nothing is created).
"""

from __future__ import annotations

import ipaddress
import re

from controller.errors import InvalidParameter

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._:-]{0,127}$")
HOSTNAME_LABEL_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
MAX_HOSTNAME_LEN = 64
MAX_USER_DATA_BYTES = 32 * 1024
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in
                         ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))
VPC_PREFIX_RANGE = (8, 28)
VSWITCH_PREFIX_RANGE = (16, 29)


def validate_name(value: str, field: str = "name") -> str:
    """1-128 chars, starts with a letter; letters, digits, ``. _ - :`` only.

    No spaces, shell metacharacters or path separators, so a name is safe in
    a log line, a file name or a libvirt XML attribute.
    """
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise InvalidParameter(
            f"InvalidParameter.{_camel(field)}", field,
            f"{field} must be 1-128 characters, start with a letter and contain only "
            "letters, digits, '.', '_', '-' and ':'")
    return value


def validate_description(value: str, field: str = "description") -> str:
    if len(value) > 256 or any(ord(c) < 32 and c not in "\t" for c in value):
        raise InvalidParameter("InvalidParameter.Description", field,
                               "description must be at most 256 printable characters")
    return value


def validate_hostname(value: str, field: str = "hostname") -> str:
    """RFC 1123: dot-separated labels of 1-63 letters, digits and inner hyphens; <= 64 in all."""
    labels = value.split(".") if value else [""]
    if len(value) > MAX_HOSTNAME_LEN or not all(HOSTNAME_LABEL_RE.fullmatch(lb) for lb in labels):
        raise InvalidParameter(
            "InvalidHostName.Malformed", field,
            "hostname must be RFC 1123 labels (letters, digits, inner '-') joined by '.', "
            f"at most {MAX_HOSTNAME_LEN} characters")
    return value


def validate_user_data(value: str, field: str = "user_data") -> str:
    """User data is plain UTF-8 text (not base64) of at most 32 KiB once encoded."""
    size = len(value.encode("utf-8", errors="surrogatepass"))
    if size > MAX_USER_DATA_BYTES:
        raise InvalidParameter("InvalidUserData.SizeExceeded", field,
                               f"user_data is {size} bytes; the limit is {MAX_USER_DATA_BYTES}")
    if "\x00" in value:
        raise InvalidParameter("InvalidUserData.Malformed", field, "user_data must not contain NUL")
    return value


def parse_cidr(value: str, field: str = "cidr_block") -> ipaddress.IPv4Network:
    """A strict IPv4 CIDR (``10.0.0.0/16``; host bits must be zero)."""
    if not isinstance(value, str) or "/" not in value:
        raise InvalidParameter("InvalidCidrBlock.Malformed", field,
                               f"{value!r} is not a CIDR block like 10.0.0.0/16")
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise InvalidParameter("InvalidCidrBlock.Malformed", field,
                               f"{value!r} is not a valid CIDR block: {exc}") from None
    if not isinstance(net, ipaddress.IPv4Network):
        raise InvalidParameter("InvalidCidrBlock.Malformed", field, "only IPv4 CIDR blocks")
    return net


def validate_vpc_cidr(value: str, field: str = "cidr_block") -> str:
    """A private (RFC 1918) IPv4 block with a prefix length of 8 to 28."""
    net = parse_cidr(value, field)
    if not any(net.subnet_of(p) for p in PRIVATE_NETWORKS):
        raise InvalidParameter("InvalidCidrBlock.Unsupported", field,
                               "a VPC CIDR block must lie in 10.0.0.0/8, 172.16.0.0/12 "
                               "or 192.168.0.0/16")
    lo, hi = VPC_PREFIX_RANGE
    if not lo <= net.prefixlen <= hi:
        raise InvalidParameter("InvalidCidrBlock.Unsupported", field,
                               f"a VPC prefix length must be {lo} to {hi}")
    return str(net)


def validate_vswitch_cidr(value: str, field: str = "cidr_block") -> str:
    """An IPv4 block with a prefix length of 16 to 29 (containment checked by the service)."""
    net = parse_cidr(value, field)
    lo, hi = VSWITCH_PREFIX_RANGE
    if not lo <= net.prefixlen <= hi:
        raise InvalidParameter("InvalidVSwitchCidr.Unsupported", field,
                               f"a vSwitch prefix length must be {lo} to {hi}")
    return str(net)


def parse_ipv4(value: str, field: str = "private_ip_address") -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise InvalidParameter("InvalidPrivateIpAddress.Malformed", field,
                               f"{value!r} is not an IPv4 address") from None


def validate_ipv4(value: str, field: str = "private_ip_address") -> str:
    return str(parse_ipv4(value, field))


def _camel(field: str) -> str:
    return "".join(part.capitalize() for part in field.split("_"))
