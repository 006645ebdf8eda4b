"""Seed rendering (docs/seed.md) and the ISO it is written to."""

from __future__ import annotations

import base64
import email
import email.policy

import pycdlib
import pytest
import yaml

from agent.seed import (VOLUME_LABEL, read_seed_iso, render_meta_data, render_network_config,
                        render_seed, render_user_data, write_seed_iso)
from agent.testing import make_instance, make_network, make_nic

KP = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB kp-demo"
USER_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB user@laptop"


def cloud_config(text: str) -> dict:
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def mime_parts(text: str) -> list[tuple[str, str]]:
    msg = email.message_from_string(text, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/mixed"
    return [(p.get_content_type(), p.get_payload(decode=True).decode())
            for p in msg.walk() if not p.is_multipart()]


def test_meta_data():
    assert yaml.safe_load(render_meta_data(make_instance(hostname="web-9"))) == {
        "instance-id": "i-cccccccccccccccccccc", "local-hostname": "web-9"}


def test_no_user_data_gives_cloud_config_with_key_and_hostname():
    cc = cloud_config(render_user_data(make_instance(keys=[KP], hostname="web-1")))
    assert cc == {"hostname": "web-1", "ssh_authorized_keys": [KP]}


def test_no_keys_no_key_list():
    assert "ssh_authorized_keys" not in cloud_config(render_user_data(make_instance(keys=[])))


def test_long_key_is_not_folded():
    long_key = "ssh-rsa " + "A" * 700 + " a comment with spaces"
    text = render_user_data(make_instance(keys=[long_key]))
    assert long_key in text.splitlines()[-1]
    assert cloud_config(text)["ssh_authorized_keys"] == [long_key]


@pytest.mark.parametrize("user_keys, expected", [
    ([USER_KEY], [USER_KEY, KP]),          # user's kept first, key pair added
    ([KP, USER_KEY], [KP, USER_KEY]),       # no duplicate
    (USER_KEY, [USER_KEY, KP]),             # a single string is a list of one
    (None, [KP]),
])
def test_cloud_config_merge_keys(user_keys, expected):
    user = {"runcmd": ["echo hello > /tmp/hello"], "packages": ["htop"]}
    if user_keys is not None:
        user["ssh_authorized_keys"] = user_keys
    ud = "#cloud-config\n" + yaml.safe_dump(user)
    cc = cloud_config(render_user_data(make_instance(user_data=ud, keys=[KP])))
    assert cc["ssh_authorized_keys"] == expected
    assert cc["runcmd"] == ["echo hello > /tmp/hello"] and cc["packages"] == ["htop"]
    assert cc["hostname"] == "web-1"


def test_users_own_hostname_wins():
    ud = "#cloud-config\nhostname: custom\n"
    assert cloud_config(render_user_data(make_instance(user_data=ud)))["hostname"] == "custom"


def test_empty_cloud_config():
    cc = cloud_config(render_user_data(make_instance(user_data="#cloud-config\n", keys=[KP])))
    assert cc == {"hostname": "web-1", "ssh_authorized_keys": [KP]}


def test_shell_script_becomes_mime_with_cloud_config_first():
    script = "#!/bin/sh\necho hi > /tmp/x\n"
    parts = mime_parts(render_user_data(make_instance(user_data=script, keys=[KP])))
    assert [t for t, _ in parts] == ["text/cloud-config", "text/x-shellscript"]
    assert cloud_config(parts[0][1])["ssh_authorized_keys"] == [KP]
    assert parts[1][1] == script


def test_user_mime_parts_kept_verbatim_including_encoding():
    script = "#!/bin/sh\necho from-mime\n"
    user = (
        'Content-Type: multipart/mixed; boundary="XYZ"\nMIME-Version: 1.0\n\n'
        "--XYZ\nContent-Type: text/x-shellscript\nContent-Transfer-Encoding: base64\n\n"
        f"{base64.b64encode(script.encode()).decode()}\n"
        "--XYZ\nContent-Type: text/cloud-config\n\n#cloud-config\nruncmd:\n - echo two\n"
        "--XYZ--\n")
    parts = mime_parts(render_user_data(make_instance(user_data=user, keys=[KP])))
    assert [t for t, _ in parts] == ["text/cloud-config", "text/x-shellscript", "text/cloud-config"]
    assert parts[1][1] == script
    assert yaml.safe_load(parts[2][1]) == {"runcmd": ["echo two"]}
    assert cloud_config(parts[0][1])["hostname"] == "web-1"


def test_cloud_config_that_is_not_a_mapping_is_passed_on_in_mime():
    ud = "#cloud-config\n- just\n- a list\n"
    parts = mime_parts(render_user_data(make_instance(user_data=ud)))
    assert parts[0][0] == "text/cloud-config" and parts[1] == ("text/cloud-config", ud)


def test_network_config_v2():
    net2 = make_network("vpc-zzzzzzzzzzzzzzzzzzzz", mtu=1500, gateways=(("10.9.0.0/16", "10.9.0.1"),))
    inst = make_instance(nics=[make_nic(mac="52:54:00:AB:CD:EF"),
                               make_nic("eni-yyyyyyyyyyyyyyyyyyyy", "52:54:00:00:00:02", "10.9.3.4",
                                        net2).model_copy(update={"prefix_len": 16})])
    nc = yaml.safe_load(render_network_config(inst))
    assert nc["version"] == 2
    eth0, eth1 = nc["ethernets"]["eth0"], nc["ethernets"]["eth1"]
    assert eth0 == {"match": {"macaddress": "52:54:00:ab:cd:ef"}, "set-name": "eth0", "mtu": 1450,
                    "addresses": ["10.0.1.23/24"],
                    "routes": [{"to": "0.0.0.0/0", "via": "10.0.1.1"}],
                    "nameservers": {"addresses": ["10.0.1.1"]}}
    assert eth1["addresses"] == ["10.9.3.4/16"] and "routes" not in eth1
    assert isinstance(eth0["match"]["macaddress"], str)


def test_iso_has_label_and_files(tmp_path):
    files = render_seed(make_instance(user_data="#!/bin/sh\ntrue\n"))
    path = tmp_path / "seed.iso"
    assert write_seed_iso(path, files) is True
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == VOLUME_LABEL
        assert iso.has_rock_ridge() and iso.has_joliet()
        names = {c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/")
                 if c.is_file()}
        assert names == {"meta-data", "user-data", "network-config"}
        joliet = {c.file_identifier().decode("utf-16-be").split(";")[0]
                  for c in iso.list_children(joliet_path="/") if c.is_file()}
        assert joliet == {"meta-data", "user-data", "network-config"}
    finally:
        iso.close()
    assert read_seed_iso(path) == (VOLUME_LABEL, files)


def test_iso_rewritten_only_when_content_changes(tmp_path):
    path = tmp_path / "seed.iso"
    files = render_seed(make_instance())
    assert write_seed_iso(path, files) is True
    inode = path.stat().st_ino
    assert write_seed_iso(path, files) is False
    assert path.stat().st_ino == inode
    assert write_seed_iso(path, render_seed(make_instance(hostname="other"))) is True
    assert read_seed_iso(path)[1]["meta-data"].decode().endswith("local-hostname: other\n")
    assert not [p for p in tmp_path.iterdir() if p.name != "seed.iso"]  # no temp files left


def test_write_seed_removes_temporary_files_a_crash_left(tmp_path):
    stale = tmp_path / ".seed.abc123.tmp"
    stale.write_bytes(b"half an ISO")
    assert write_seed_iso(tmp_path / "seed.iso", {"meta-data": b"instance-id: i-1\n"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seed.iso"]
