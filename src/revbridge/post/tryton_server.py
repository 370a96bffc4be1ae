"""Run a local Tryton server (SQLite) as a subprocess: databases, start, stop.

Layout of a work directory::

    trytond.conf      written by ``write_config()``
    db/<name>.sqlite  one file per database
    trytond.log       server stdout/stderr
    admin-<name>.log  output of trytond-admin

Commands (executables are looked up next to ``sys.executable``)::

    touch db/<name>.sqlite
    TRYTONPASSFILE=<file> trytond-admin -c trytond.conf -d <name> \
        -u account revbridge_erp --activate-dependencies --email <email>
    trytond -c trytond.conf -d <name> [<name> ...]

Tryton 8.2 must be told its databases at start (``-d``): a database whose pool is first
touched by ``common.db.login`` is never initialised (``KeyError: 'res.user'``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from revbridge.errors import RevbridgeError

DEFAULT_MODULES = ("account", "revbridge_erp")


class TrytonServerError(RevbridgeError):
    """The local Tryton server or trytond-admin failed (message carries the log tail)."""


def bin_dir() -> Path:
    """Where trytond / trytond-admin live: the interpreter's own bin directory."""
    return Path(sys.executable).parent


def is_available() -> bool:
    """True when trytond, its executables and the revbridge_erp module are installed."""
    if importlib.util.find_spec("trytond") is None:
        return False
    if not all((bin_dir() / exe).exists() for exe in ("trytond", "trytond-admin")):
        return False
    modules = importlib.metadata.entry_points(group="trytond.modules")
    return any(ep.name == "revbridge_erp" for ep in modules)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def copy_sqlite_database(source: Path, target: Path) -> None:
    """Consistent copy of a SQLite database, including what is still in its WAL file.

    Tryton runs SQLite in WAL mode and a terminated server leaves recent commits in
    ``<name>.sqlite-wal``: copying only the main file would lose them.
    """
    if not source.exists():
        raise TrytonServerError(f"no database file {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class TrytonServer:
    """One ``trytond`` process serving the SQLite databases of a work directory."""

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        session_timeout: int = 3600,
        startup_timeout: float = 60.0,
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self._port = port
        self.session_timeout = session_timeout
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    is_available = staticmethod(is_available)

    # -- paths

    @property
    def config_path(self) -> Path:
        return self.workdir / "trytond.conf"

    @property
    def db_dir(self) -> Path:
        return self.workdir / "db"

    @property
    def log_path(self) -> Path:
        return self.workdir / "trytond.log"

    @property
    def port(self) -> int:
        if self._port is None:
            self._port = free_port(self.host)
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def database_path(self, name: str) -> Path:
        return self.db_dir / f"{name}.sqlite"

    def databases(self) -> list[str]:
        if not self.db_dir.is_dir():
            return []
        return sorted(p.stem for p in self.db_dir.glob("*.sqlite"))

    # -- configuration and databases

    def write_config(self) -> Path:
        """(Re)write trytond.conf for this work directory and port."""
        self.db_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(
            "\n".join(
                [
                    "[database]",
                    "uri = sqlite://",
                    f"path = {self.db_dir}",
                    "list = True",
                    "",
                    "[web]",
                    f"listen = {self.host}:{self.port}",
                    "",
                    "[session]",
                    f"timeout = {self.session_timeout}",
                    f"max_age = {max(self.session_timeout, 86400)}",
                    "",
                ]
            ),
            encoding="utf-8",
        )
        return self.config_path

    def create_database(
        self,
        name: str,
        admin_password: str,
        *,
        modules: Sequence[str] = DEFAULT_MODULES,
        admin_email: str = "admin@example.com",
        timeout: float = 600.0,
    ) -> None:
        """Create (or update) database ``name`` and activate ``modules`` with dependencies."""
        self.write_config()
        path = self.database_path(name)
        path.touch(exist_ok=True)  # trytond-admin does not create SQLite files
        passfile = self.workdir / f".admin-password-{name}"
        passfile.write_text(admin_password + "\n", encoding="utf-8")
        passfile.chmod(0o600)
        log_path = self.workdir / f"admin-{name}.log"
        command = [
            str(bin_dir() / "trytond-admin"),
            "-c",
            str(self.config_path),
            "-d",
            name,
            "-u",
            *modules,
            "--activate-dependencies",
            "--email",
            admin_email,
        ]
        env = {**os.environ, "TRYTONPASSFILE": str(passfile)}
        try:
            with log_path.open("wb") as log:
                completed = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=timeout,
                    check=False,
                )
        except subprocess.TimeoutExpired as exc:
            raise TrytonServerError(
                f"trytond-admin timed out after {timeout}s:\n{_tail(log_path)}"
            ) from exc
        finally:
            passfile.unlink(missing_ok=True)
        if completed.returncode != 0:
            raise TrytonServerError(
                f"trytond-admin failed ({completed.returncode}) for {name}:\n{_tail(log_path)}"
            )

    def copy_database(self, source: str, target: str) -> None:
        """Copy database ``source`` to ``target`` (cheap fresh databases for tests)."""
        copy_sqlite_database(self.database_path(source), self.database_path(target))

    # -- process

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, databases: Sequence[str] | None = None) -> None:
        """Start trytond for ``databases`` (default: every database in the work dir)."""
        if self.running:
            raise TrytonServerError(f"trytond already running (pid {self.pid})")
        names = list(databases) if databases is not None else self.databases()
        self.write_config()
        command = [str(bin_dir() / "trytond"), "-c", str(self.config_path)]
        if names:
            command += ["-d", *names]
        log = self.log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        finally:
            log.close()  # the child holds its own descriptor
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise TrytonServerError(
                    f"trytond exited with {code} before answering:\n{_tail(self.log_path)}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise TrytonServerError(
                    f"trytond did not answer on {self.host}:{self.port} within "
                    f"{self.startup_timeout}s:\n{_tail(self.log_path)}"
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the server by pid (SIGTERM, then SIGKILL) and wait for it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)

    def restart(self, databases: Sequence[str] | None = None) -> None:
        self.stop()
        self.start(databases)

    def __enter__(self) -> TrytonServer:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
