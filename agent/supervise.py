"""Run the agent under a small supervisor where systemd is not PID 1.

``miniecs host add`` starts this (detached, ``setsid``) on a host whose init
is not systemd, such as a test-rig host or a container: it restarts the agent
when it fails, like ``Restart=on-failure``, and gives up after
``MAX_FAILURES`` failures within ``WINDOW_S`` (a broken config would
otherwise loop for ever). Writes its own pid to ``--pidfile``; SIGTERM stops
the agent (guests keep running) and then the supervisor. Not a substitute for
systemd across reboots: nothing starts it again after one.

    python -m agent.supervise --config agent.toml --pidfile agent.pid --log agent.log
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

MAX_FAILURES = 5
WINDOW_S = 120.0
MAX_BACKOFF_S = 30.0


def log_line(log, text: str) -> None:
    log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} supervisor: {text}\n")
    log.flush()


def supervise(config: Path, pidfile: Path, log_path: Path) -> int:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as we do
    tmp = pidfile.with_suffix(".tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.rename(pidfile)
    stopping = False
    child: subprocess.Popen | None = None

    def on_term(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    failures: list[float] = []
    backoff = 1.0
    try:
        while not stopping:
            log_line(log, f"starting the agent ({config})")
            child = subprocess.Popen([sys.executable, "-m", "agent.main", "--config", str(config)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            code = child.wait()
            if stopping:
                log_line(log, f"agent stopped (exit {code})")
                return 0
            if code == 0:
                log_line(log, "agent exited cleanly; not restarting")
                return 0
            now = time.monotonic()
            failures = [t for t in failures if now - t < WINDOW_S] + [now]
            if len(failures) >= MAX_FAILURES:
                log_line(log, f"agent failed {len(failures)} times in {WINDOW_S:.0f}s "
                         f"(last exit {code}); giving up")
                return 1
            log_line(log, f"agent exited with {code}; restarting in {backoff:.0f}s")
            deadline = time.monotonic() + backoff
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.2)
            backoff = min(MAX_BACKOFF_S, backoff * 2)
        return 0
    finally:
        pidfile.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--pidfile", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args(argv)
    return supervise(args.config, args.pidfile, args.log)


if __name__ == "__main__":
    sys.exit(main())
