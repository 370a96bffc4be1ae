"""``revbridge serve`` as a real process: a file dropped in the inbox is stored, moved to
``accepted/`` and booked; an unreadable one goes to ``rejected/``; Ctrl-C stops it."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from revbridge import bootstrap
from revbridge.config import load_config
from tests.conftest import WORKED_EXAMPLE


def wait_for(predicate: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_serve_watches_the_inbox(deployment: Path) -> None:
    folder = deployment.parent
    revbridge = Path(sys.executable).with_name("revbridge")
    process = subprocess.Popen(
        [str(revbridge), "serve", "--config", str(deployment)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        shutil.copy(WORKED_EXAMPLE, folder / "inbox" / "era.835")
        (folder / "inbox" / "garbage.835").write_bytes(b"\x00\x01 not x12")
        gl = folder / "gl-out"
        assert wait_for((folder / "inbox" / "accepted" / "era.835").exists)
        assert wait_for((folder / "inbox" / "rejected" / "garbage.835").exists)
        assert wait_for(lambda: len(list(gl.glob("gl-*.csv"))) >= 1)
    finally:
        process.send_signal(signal.SIGINT)
        _out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert b"Traceback" not in err
    app = bootstrap.build(load_config(deployment, bootstrap.SPECS))
    with app.store.unit_of_work() as uow:
        assert len(uow.journals.all()) == 3
        assert "rejected_file" in [x.reason for x in uow.exceptions.all()]
    app.close()
