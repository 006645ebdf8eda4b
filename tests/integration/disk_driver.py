"""One reconcile pass of the agent's disk reconciler, in its own process, for crash tests.

``python -m tests.integration.disk_driver STATE SPEC.json REPORT.json STORE`` runs
``DiskReconciler.before_domains`` + ``cleanup`` on the host spec in SPEC.json over the
state directory STATE (real qcow2 files, real qemu-img; no domains, so libvirt is the
fake) and writes ``report_fields`` to REPORT.json. Image exports are "uploaded" by an
atomic copy into STORE (standing in for the controller's image store) and downloaded
from there (disks from another host's snapshot). With
``MINIECS_AGENT_FAULT`` set, the process SIGKILLs itself at that point, exactly as
the agent would.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from agent.disks import DiskReconciler
from agent.records import OperationLog
from agent.spec import HostSpec
from agent.state import StateDir
from agent.testing import FakeLibvirt


def main(state_dir: str, spec_file: str, report_file: str, store: str) -> int:
    state = StateDir(state_dir)
    state.ensure()

    def upload(url: str, path: Path) -> None:
        dest = Path(store) / url.rstrip("/").split("/")[-2]
        tmp = dest.with_name(f".{dest.name}.up")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)

    def download(url: str, part: Path) -> None:  # resumable, like the agent's client
        src = Path(store) / url.rstrip("/").split("/")[-2]
        offset = part.stat().st_size if part.exists() else 0
        with open(src, "rb") as fin, open(part, "ab") as fout:
            fin.seek(offset)
            shutil.copyfileobj(fin, fout)

    dr = DiskReconciler(state, FakeLibvirt(), OperationLog(state.operations_json), upload=upload,
                        download=download)
    spec = HostSpec.model_validate_json(Path(spec_file).read_text())
    errors: list[str] = []
    dr.before_domains(spec, errors)
    dr.cleanup(spec, errors)
    fields = dr.report_fields(spec)
    out = {k: [x.model_dump() for x in v] for k, v in fields.items()}
    out["errors"] = errors
    Path(report_file).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
