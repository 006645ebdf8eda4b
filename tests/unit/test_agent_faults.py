import os
import subprocess
import sys

import pytest

from agent import faults


def test_point_is_a_no_op_without_the_variable(monkeypatch):
    monkeypatch.delenv(faults.ENV, raising=False)
    faults.point("unit.noop")
    faults.point("unit.noop")
    assert faults.known_points()["unit.noop"] >= 2


@pytest.mark.parametrize("spec,reached", [("unit.x", 1), ("unit.x@3", 3)])
def test_point_kills_the_process_at_the_asked_occurrence(tmp_path, spec, reached):
    log = tmp_path / "fault.log"
    code = ("from agent import faults\n"
            "for i in range(5):\n"
            "    print(i, flush=True)\n"
            "    faults.point('unit.x')\n")
    env = dict(os.environ, **{faults.ENV: spec, faults.LOG_ENV: str(log)})
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == -9
    assert proc.stdout.split() == [str(i) for i in range(reached)]
    assert log.read_text() == "unit.x\n"
