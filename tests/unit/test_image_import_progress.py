"""``miniecs image import --wait`` shows how much of the source the controller has copied:
the image view carries ``progress_bytes`` / ``source_size_bytes`` while it is Creating."""

from __future__ import annotations

import http.server
import re
import threading
import time

import pytest

from tests.unit.test_cli_commands import as_json, cli, live, miniecs  # noqa: F401 - fixtures

SIZE = 4 << 20
PIECE = 256 << 10


class SlowHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``/raw`` (4 MiB of non-zero bytes) in 256 KiB pieces, 0.1 s apart."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Length", str(SIZE))
        self.end_headers()
        for _ in range(SIZE // PIECE):
            self.wfile.write(b"\x5a" * PIECE)
            self.wfile.flush()
            time.sleep(0.1)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def slow_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/raw"
    server.shutdown()
    server.server_close()


def test_import_progress_in_the_view_and_the_cli(cli, slow_url):  # noqa: F811
    # the API: progress grows while Creating, and is gone once Available
    image = cli.region.ok("POST", "/images", {"name": "slow", "format": "raw",
                                              "source_url": slow_url})
    seen = []
    deadline = time.monotonic() + 30
    while (got := cli.region.ok("GET", f"/images/{image['id']}"))["status"] == "Creating":
        assert time.monotonic() < deadline
        if got["progress_bytes"] is not None:
            assert got["source_size_bytes"] == SIZE
            seen.append(got["progress_bytes"])
        time.sleep(0.05)
    assert got["status"] == "Available" and got["progress_bytes"] is None
    assert any(0 < n < SIZE for n in seen) and seen == sorted(seen), seen

    # the CLI: one line per change on a non-terminal stderr, with the percentage
    result = miniecs("image", "import", "slow-cli", "--format", "raw", "--url", slow_url,
                     "--wait", "--timeout", "60", "-o", "json")
    lines = re.findall(r"Creating ([\d.]+ \w+) of 4\.0 MiB \((\d+)%\)", result.stderr)
    assert len(lines) >= 2, result.stderr
    percents = [int(p) for _, p in lines]
    assert percents == sorted(percents) and any(0 < p < 100 for p in percents), result.stderr
    assert '"status": "Available"' in result.stdout
