"""``revbridge worker``: work the job queue (no drop folders), woken by the store.

Any number of these processes, on one host or several, share one store (PostgreSQL for
several hosts; SQLite for processes on one host). Each job is leased by one of them at a
time, and one key's jobs run one after the other in id order: both are the store's claim
(``JobQueue.claim``), so the processes need not know about each other. A worker that dies
holding a lease stops renewing nothing (leases are not renewed): when the lease expires,
any other worker may take the job over, and its fencing token makes the dead (or paused)
worker's late commit fail with ``LeaseLost``.

The loop (``WorkLoop``, which ``serve`` uses too): run jobs while one can be claimed; when
none can, wait, holding no lease and no transaction, until ``Store.wait_for_work`` says
work may have arrived (PostgreSQL: ``LISTEN``/``NOTIFY``, delivered at commit; SQLite: a
short poll), or until the earliest of: the next retry falling due, the next lease expiring
(a dead worker's job to take over), ``worker.poll_seconds`` (a safety net). SIGTERM or
SIGINT asks for a graceful stop: the job in hand is finished and recorded, then the
process exits 0; a second signal stops it at once.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

import click

from revbridge import bootstrap
from revbridge.cli.common import app_for, config_option
from revbridge.orchestrate import owners
from revbridge.orchestrate.worker import RunStats, Worker
from revbridge.store.postgres import describe_dsn

log = logging.getLogger(__name__)

STOP_CHECK_SECONDS = 0.25
"""A waiting worker looks at its stop flag at least this often."""

IDLE_GRACE_SECONDS = 30.0
"""``--until-idle``: wait for retries that fall due within this long, then exit."""

IDLE_LOOKS, IDLE_SETTLE_SECONDS = 2, 0.05
"""``--until-idle`` exits after this many idle looks in a row, this far apart."""

_MIN_WAIT_SECONDS = 0.001
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class Tick:
    """Something to do every ``seconds`` whatever the queue does (``serve`` polls inputs)."""

    action: Callable[[], None]
    seconds: float
    _next: float = 0.0

    def due_in(self) -> float:
        return self._next - time.monotonic()

    def run_if_due(self) -> None:
        if self.due_in() <= 0:
            self.action()
            self._next = time.monotonic() + self.seconds


@dataclass
class WorkLoop:
    """Claim and run jobs; when none can be claimed, wait for a wake-up (see the module)."""

    worker: Worker
    stop: threading.Event
    max_wait_seconds: float = 1.0
    until_idle: bool = False
    idle_grace_seconds: float = IDLE_GRACE_SECONDS
    tick: Tick | None = None
    wakes: int = field(default=0, init=False)  # wake-ups that ended an idle wait

    def run(self) -> RunStats:
        """Until stopped (or idle, ``until_idle``); a job claimed ahead and not run is put
        back (``Worker.release``), so a stopped worker holds no lease."""
        try:
            self._loop()
        finally:
            self.worker.release()
        return self.worker.stats

    def _loop(self) -> None:
        idle_looks = 0
        while not self.stop.is_set():
            if self.tick is not None:
                self.tick.run_if_due()
            if self.worker.run_once():
                idle_looks = 0
                continue
            wait = self.idle_wait()
            if wait is None:
                # Idle twice in a row, a moment apart: a claim of another worker still
                # in flight (its lease not yet visible) can look like an empty queue.
                idle_looks += 1
                if idle_looks >= IDLE_LOOKS:
                    return
                wait = IDLE_SETTLE_SECONDS
            self._wait(wait)

    def idle_wait(self) -> float | None:
        """How long to wait for a wake-up now that nothing can be claimed; ``None``: stop
        (``until_idle`` and nothing left that this worker could run soon)."""
        with self.worker.store.unit_of_work() as uow:
            due = uow.jobs.next_run_after()
            expiry = uow.jobs.next_lease_expiry()
        now = self.worker.clock.now()
        to_due = None if due is None else (due - now).total_seconds()
        to_expiry = None if expiry is None else (expiry - now).total_seconds()
        if self.until_idle and expiry is None and not self._due_soon(to_due):
            return None
        waits = [self.max_wait_seconds]
        waits += [t + _MIN_WAIT_SECONDS for t in (to_due, to_expiry) if t is not None and t > 0]
        if self.tick is not None:
            waits.append(max(self.tick.due_in(), 0.0))
        return max(min(waits), 0.0)

    def _due_soon(self, to_due: float | None) -> bool:
        """A ready job falls due within the grace. One already due that could not be
        claimed is held back (behind a parked job of its key) or not of our kinds."""
        return to_due is not None and 0 < to_due <= self.idle_grace_seconds

    def _wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for a wake-up, looking at the stop flag in between."""
        deadline = time.monotonic() + seconds
        while not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.worker.store.wait_for_work(min(left, STOP_CHECK_SECONDS)):
                self.wakes += 1
                return


@contextmanager
def graceful_signals(stop: threading.Event) -> Iterator[None]:
    """SIGTERM and SIGINT set ``stop`` (finish the job in hand, then exit); a second one
    gets the previous handler (Ctrl-C again: stop at once). Only the main thread can."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {number: signal.getsignal(number) for number in _STOP_SIGNALS}

    def ask(number: int, _frame: FrameType | None) -> None:
        stop.set()
        again = signal.Signals(number)
        signal.signal(again, previous[again])

    for number in _STOP_SIGNALS:
        signal.signal(number, ask)
    try:
        yield
    finally:
        for number in _STOP_SIGNALS:
            signal.signal(number, previous[number])


# ---------------------------------------------------------------------------- the command


@dataclass(frozen=True, slots=True)
class WorkOptions:
    concurrency: int = 1
    kinds: tuple[str, ...] = ()  # empty: every kind
    until_idle: bool = False
    owner: str | None = None  # default host:pid:start (owners.this_process)


def describe_store(app: bootstrap.App) -> str:
    """Where the store is, without secrets (for the banner)."""
    options = app.config.store.options
    if app.config.store.type == "postgres":
        return describe_dsn(options["dsn"].reveal())
    return f"sqlite:{options['path']}"


def make_loops(app: bootstrap.App, options: WorkOptions, stop: threading.Event) -> list[WorkLoop]:
    """One loop (and one worker, with its own lease owner id) per thread."""
    owner = options.owner or owners.this_process()
    loops: list[WorkLoop] = []
    for number in range(options.concurrency):
        worker = app.worker()
        unknown = sorted(set(options.kinds) - set(worker.handlers))
        if unknown:
            known = ", ".join(sorted(worker.handlers))
            raise click.UsageError(f"unknown job kind {', '.join(unknown)}; known: {known}")
        if options.kinds:
            worker.handlers = {k: h for k, h in worker.handlers.items() if k in options.kinds}
        worker.owner = owner if options.concurrency == 1 else f"{owner}/{number + 1}"
        loops.append(
            WorkLoop(
                worker,
                stop,
                max_wait_seconds=float(app.config.worker["poll_seconds"]),
                until_idle=options.until_idle,
            )
        )
    return loops


def work(
    app: bootstrap.App,
    options: WorkOptions,
    *,
    stop: threading.Event | None = None,
    echo: Callable[[str], None] = click.echo,
) -> RunStats:
    """What ``revbridge worker`` does once the app is built (a test or a benchmark can build
    it with other sinks): banner, loops, a summary line. Returns the summed counts."""
    stop = stop or threading.Event()
    loops = make_loops(app, options, stop)
    owner = options.owner or owners.this_process()
    with graceful_signals(stop):  # before the banner: whoever reads it may signal at once
        echo(
            f"revbridge worker {owner} started: store {describe_store(app)}, concurrency "
            f"{options.concurrency}, kinds {','.join(options.kinds) or 'all'}, lease "
            f"{app.config.worker['lease_seconds']:g} s"
        )
        _run_all(loops, stop)
    stats = total(loop.worker.stats for loop in loops)
    ended = "idle" if options.until_idle and not stop.is_set() else "stopped"
    echo(
        f"revbridge worker {owner} {ended}: processed {stats.processed} jobs "
        f"({_kinds(stats.by_kind)}); retried {stats.retried}; deferred {stats.deferred}; "
        f"parked {stats.parked}"
    )
    return stats


def _run_all(loops: Sequence[WorkLoop], stop: threading.Event) -> None:
    """Run the loops (the first in this thread); the first failure stops them all."""
    failures: list[Exception] = []

    def run(loop: WorkLoop) -> None:
        try:
            loop.run()
        except Exception as exc:  # raised below, once the other loops have stopped
            log.exception("worker %s failed; stopping the others", loop.worker.owner)
            failures.append(exc)
            stop.set()

    threads = [threading.Thread(target=run, args=(loop,), daemon=True) for loop in loops[1:]]
    for thread in threads:
        thread.start()
    run(loops[0])
    for thread in threads:
        while thread.is_alive():
            thread.join(STOP_CHECK_SECONDS)
    if failures:
        raise failures[0]


def total(all_stats: Iterator[RunStats] | Sequence[RunStats]) -> RunStats:
    summed = RunStats()
    for stats in all_stats:
        summed.processed += stats.processed
        summed.retried += stats.retried
        summed.deferred += stats.deferred
        summed.parked += stats.parked
        for kind, count in stats.by_kind.items():
            summed.by_kind[kind] = summed.by_kind.get(kind, 0) + count
    return summed


def _kinds(by_kind: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())) or "none"


def _split_kinds(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(k.strip() for v in values for k in v.split(",") if k.strip()))


@click.command("worker")
@config_option
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Jobs run at once by this process (threads, each with its own lease owner id).",
)
@click.option(
    "--kinds",
    "kinds",
    multiple=True,
    metavar="KIND[,KIND]",
    help="Run only these job kinds (normalise, journal, post); repeatable. Default: all.",
)
@click.option("--until-idle", is_flag=True, help="Exit once no work is left that can run soon.")
def worker(
    config_path: str | None, concurrency: int, kinds: Sequence[str], until_idle: bool
) -> None:
    """Work the job queue (no drop folders) until SIGTERM / Ctrl-C, sharing it with any
    other workers on the same store: woken by the store instead of polling it."""
    options = WorkOptions(concurrency, _split_kinds(kinds), until_idle)
    with app_for(config_path) as app:
        work(app, options)
