"""A transaction PostgreSQL rolled back as a deadlock victim is run again; other
operational errors are not retried."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import OperationalError

from controller.db import Database


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def _db(tmp_path) -> Database:
    return Database(f"sqlite:///{tmp_path}/t.db")


def test_a_deadlock_victim_is_run_again(tmp_path):
    db = _db(tmp_path)
    calls = []

    def fn(session):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("UPDATE hosts ...", {}, _Orig("40P01"))
        return "done"

    assert db.write_retrying(fn) == "done"
    assert len(calls) == 2
    db.dispose()


def test_other_operational_errors_are_not_retried(tmp_path):
    db = _db(tmp_path)
    calls = []

    def fn(session):
        calls.append(1)
        raise OperationalError("SELECT 1", {}, _Orig("08006"))  # connection failure

    with pytest.raises(OperationalError):
        db.write_retrying(fn)
    assert len(calls) == 1
    db.dispose()
