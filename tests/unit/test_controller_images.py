"""Image import: local files and URLs, sha256, qemu-img with an explicit format,
refusal of backing files and external data files, delete rules."""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import subprocess
import threading
import time

import pytest

from tests.controller_factories import region  # noqa: F401 - fixture

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing")


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    qemu_img("create", "-f", "qcow2", str(d / "good.qcow2"), "2G")
    qemu_img("create", "-f", "qcow2", "-b", str(d / "good.qcow2"), "-F", "qcow2",
             str(d / "overlay.qcow2"))
    qemu_img("create", "-f", "qcow2", "-o", f"data_file={d / 'data.raw'}",
             str(d / "datafile.qcow2"), "64M")
    (d / "disk.raw").write_bytes(b"\0" * (3 * 1024 * 1024))
    return d


def wait_status(region, image_id: str, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        image = region.ok("GET", f"/images/{image_id}")
        if image["status"] != "Creating" or time.monotonic() > deadline:
            return image
        time.sleep(0.05)


def test_import_local_qcow2(region, files):
    r = region.call("POST", "/images", {"name": "good", "source_path": str(files / "good.qcow2")})
    assert r.status_code == 202 and r.json()["status"] == "Creating"
    image = wait_status(region, r.json()["id"])
    assert image["status"] == "Available", image
    assert image["sha256"] == hashlib.sha256((files / "good.qcow2").read_bytes()).hexdigest()
    assert image["virtual_size_bytes"] == 2 * 1024 ** 3
    assert image["min_disk_gib"] == 2
    stored = region.settings.effective_image_store_dir / f"{image['id']}.qcow2"
    assert stored.read_bytes() == (files / "good.qcow2").read_bytes()


def test_import_raw(region, files):
    r = region.ok("POST", "/images", {"name": "r", "format": "raw",
                                      "source_path": str(files / "disk.raw")})
    image = wait_status(region, r["id"])
    assert (image["status"], image["virtual_size_bytes"], image["min_disk_gib"]) == \
        ("Available", 3 * 1024 * 1024, 1)


@pytest.mark.parametrize("source,fmt,code", [
    ("overlay.qcow2", "qcow2", "InvalidImage.BackingFile"),
    ("datafile.qcow2", "qcow2", "InvalidImage.ExternalDataFile"),
    ("good.qcow2", "raw", "InvalidImage.FormatMismatch"),
    ("disk.raw", "qcow2", "InvalidImage.Malformed"),
    ("missing.qcow2", "qcow2", "InvalidImage.SourceNotFound"),
])
def test_refused_local_images_create_nothing(region, files, source, fmt, code):
    r = region.call("POST", "/images", {"name": "bad", "format": fmt,
                                        "source_path": str(files / source)})
    assert r.status_code == 400, r.text
    assert (r.json()["code"], r.json()["field"]) == (code, "source_path")
    assert region.items("/images") == []


def test_exactly_one_source(region, files):
    for body in ({"name": "x"}, {"name": "x", "source_path": str(files / "good.qcow2"),
                                 "source_url": "http://127.0.0.1:1/x"}):
        r = region.call("POST", "/images", body)
        assert (r.status_code, r.json()["code"]) == (400, "MissingParameter.Source")
    r = region.call("POST", "/images", {"name": "x", "source_path": "relative/path.qcow2"})
    assert r.json()["code"] == "InvalidImage.SourceNotFound"
    r = region.call("POST", "/images", {"name": "x", "source_url": "file:///etc/passwd"})
    assert r.status_code == 400
    assert region.items("/images") == []


@pytest.fixture
def http_server(files):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(files))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_import_from_url_and_refusal_after_download(region, files, http_server):
    ok = region.ok("POST", "/images", {"name": "web", "source_url": f"{http_server}/good.qcow2"})
    image = wait_status(region, ok["id"])
    assert image["status"] == "Available", image
    assert image["sha256"] == hashlib.sha256((files / "good.qcow2").read_bytes()).hexdigest()

    bad = region.ok("POST", "/images", {"name": "evil",
                                        "source_url": f"{http_server}/overlay.qcow2"})
    image = wait_status(region, bad["id"])
    assert image["status"] == "Error"
    assert image["status_reason"].startswith("InvalidImage.BackingFile")
    missing = region.ok("POST", "/images", {"name": "gone",
                                            "source_url": f"{http_server}/nope.qcow2"})
    assert wait_status(region, missing["id"])["status"] == "Error"
    leftovers = [p.name for p in region.settings.effective_image_store_dir.iterdir()]
    assert leftovers == [f"{ok['id']}.qcow2"]


def test_duplicate_name_and_delete_in_use(region, files):
    first = region.ok("POST", "/images", {"name": "img", "source_path": str(files / "good.qcow2")})
    r = region.call("POST", "/images", {"name": "img", "source_path": str(files / "good.qcow2")})
    assert (r.status_code, r.json()["code"]) == (409, "InvalidImageName.Duplicated")
    wait_status(region, first["id"])
    region.register_host()
    net = region.network()
    inst = region.create_instance(net, first["id"], system_disk_size_gib=2)
    r = region.call("DELETE", f"/images/{first['id']}")
    assert (r.status_code, r.json()["code"]) == (409, "DependencyViolation.Instance")
    r = region.call("POST", "/instances", region.instance_body(
        net, first["id"], system_disk_size_gib=1))
    assert r.json()["code"] == "InvalidSystemDiskSize.LessThanImageSize"
    assert [i["id"] for i in region.items("/instances")] == [inst["id"]]


def test_interrupted_import_becomes_error_on_restart(region):
    from controller.models import Image
    from controller.services.images import fail_interrupted_imports
    with region.db.write() as session:
        session.add(Image(id="m-stuck0000000000000000", name="stuck", format="qcow2",
                          source="/x", status="Creating"))
    assert fail_interrupted_imports(region.db) == 1
    image = region.ok("GET", "/images/m-stuck0000000000000000")
    assert image["status"] == "Error" and "ImportInterrupted" in image["status_reason"]


def test_sparse_image_stays_sparse_in_the_store(region, tmp_path):  # noqa: F811
    """A 256 MiB raw image with 2 MiB of data is stored with about 2 MiB allocated, not 256."""
    src = tmp_path / "sparse.raw"
    with open(src, "wb") as f:
        f.truncate(256 << 20)
        f.seek(10 << 20)
        f.write(b"\x5a" * (1 << 20))
        f.seek(200 << 20)
        f.write(b"\x5b" * (1 << 20) + b"\0" * 4096 + b"\x5c")  # zeros inside data stay data
    image = wait_status(region, region.ok("POST", "/images", {
        "name": "sparse", "format": "raw", "source_path": str(src)})["id"])
    assert image["status"] == "Available", image
    stored = region.settings.effective_image_store_dir / f"{image['id']}.raw"
    assert stored.stat().st_size == src.stat().st_size == 256 << 20
    allocated, source_allocated = stored.stat().st_blocks * 512, src.stat().st_blocks * 512
    assert allocated <= source_allocated + (128 << 10), (allocated, source_allocated)
    assert allocated < 4 << 20
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == image["sha256"] == \
        hashlib.sha256(src.read_bytes()).hexdigest()
