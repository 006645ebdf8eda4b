"""Validators: names, hostnames, CIDRs, user data (incl. property tests)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import validation as v
from controller.errors import InvalidParameter


@pytest.mark.parametrize("name", ["web", "a", "web-1.prod_x:y", "A" * 128, "x9"])
def test_good_names(name):
    assert v.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "1web", "-web", "web 1", "web;rm", "a/b", "a\\b", "$(x)",
                                  "web`", "a|b", "a&b", "a>b", "A" * 129, "wéb", "a\nb", "../x"])
def test_bad_names(name):
    with pytest.raises(InvalidParameter) as exc:
        v.validate_name(name)
    assert exc.value.code == "InvalidParameter.Name"
    assert exc.value.field == "name"


@given(st.text(max_size=200))
def test_an_accepted_name_is_shell_and_path_safe(text):
    try:
        v.validate_name(text)
    except InvalidParameter:
        return
    assert 1 <= len(text) <= 128 and text[0].isascii() and text[0].isalpha()
    assert not set(text) & set(" /\\;&|$`'\"<>()*?![]{}~#\n\t\r\0")


@pytest.mark.parametrize("hostname", ["web-1", "a", "web.example.com", "x" * 63, "i-abc123"])
def test_good_hostnames(hostname):
    assert v.validate_hostname(hostname) == hostname


@pytest.mark.parametrize("hostname", ["", "-web", "web-", "we_b", "x" * 64 + ".a", "a..b",
                                      "web 1", "a/b", "x" * 65, ".web"])
def test_bad_hostnames(hostname):
    with pytest.raises(InvalidParameter) as exc:
        v.validate_hostname(hostname)
    assert exc.value.code == "InvalidHostName.Malformed"


def test_user_data_limit_is_32_kib_of_utf8():
    assert v.validate_user_data("x" * 32768)
    with pytest.raises(InvalidParameter) as exc:
        v.validate_user_data("x" * 32769)
    assert exc.value.code == "InvalidUserData.SizeExceeded"
    with pytest.raises(InvalidParameter):  # 16385 two-byte characters = 32770 bytes
        v.validate_user_data("é" * 16385)


@pytest.mark.parametrize("cidr", ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                                  "10.1.0.0/28", "192.168.10.0/24"])
def test_good_vpc_cidrs(cidr):
    assert v.validate_vpc_cidr(cidr) == cidr


@pytest.mark.parametrize("cidr,code", [
    ("10.0.0.0", "InvalidCidrBlock.Malformed"),
    ("10.0.0.1/16", "InvalidCidrBlock.Malformed"),       # host bits set
    ("10.0.0.0/33", "InvalidCidrBlock.Malformed"),
    ("banana/8", "InvalidCidrBlock.Malformed"),
    ("fd00::/64", "InvalidCidrBlock.Malformed"),
    ("8.8.8.0/24", "InvalidCidrBlock.Unsupported"),       # not private
    ("10.0.0.0/29", "InvalidCidrBlock.Unsupported"),      # too small for a VPC
    ("0.0.0.0/0", "InvalidCidrBlock.Unsupported"),
])
def test_bad_vpc_cidrs(cidr, code):
    with pytest.raises(InvalidParameter) as exc:
        v.validate_vpc_cidr(cidr)
    assert exc.value.code == code
    assert exc.value.field == "cidr_block"


def test_vswitch_prefix_range():
    assert v.validate_vswitch_cidr("10.0.0.0/29")
    for bad in ("10.0.0.0/30", "10.0.0.0/15"):
        with pytest.raises(InvalidParameter) as exc:
            v.validate_vswitch_cidr(bad)
        assert exc.value.code == "InvalidVSwitchCidr.Unsupported"


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_parse_cidr_accepts_exactly_strict_networks(addr, prefix):
    text = f"{ipaddress.IPv4Address(addr)}/{prefix}"
    strict = int(ipaddress.IPv4Network(text, strict=False).network_address) == addr
    try:
        v.parse_cidr(text)
        assert strict
    except InvalidParameter:
        assert not strict
