"""The namespace rig (see rig.py)."""

from tests.rig.rig import DEFAULT_BASE, Rig, RigHost, rig_down, stop_pid

__all__ = ["DEFAULT_BASE", "Rig", "RigHost", "rig_down", "stop_pid"]
