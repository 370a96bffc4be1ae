"""Eight senders at once, every message delivered three times, while a worker runs.

The senders are ``revbridge ingest --format json`` processes (what they are told is read
from their JSON answer). Each message goes to three different senders; each sender
delivers its share in its own order. For each distinct file exactly one delivery may be
told "accepted", the others "duplicate"; resends of the same payments under new control
numbers are accepted as files but become duplicates at the payment level.
"""

from __future__ import annotations

import random
import subprocess
from collections import Counter
from pathlib import Path

from tests.conftest import WORKED_EXAMPLE
from tests.faults.checker import SenderHistory
from tests.faults.corpus import write_corpus
from tests.faults.harness import (
    ROOT,
    ingest_command,
    make_deployment,
    processes,
    record,
    run_runner,
    runner_command,
    scale,
)

SENDERS = 8
COPIES = 3


def test_eight_concurrent_senders_deliver_every_message_three_times(work: Path) -> None:
    deployment = make_deployment(work / "deploy")
    deployment.app()[0].close()
    paths = [*write_corpus(work / "msgs", seed=31, files=scale(8, 60)), WORKED_EXAMPLE]
    rng = random.Random(31)
    shares: list[list[Path]] = [[] for _ in range(SENDERS)]
    for index, path in enumerate(paths):
        for copy in range(COPIES):
            shares[(index + copy * 3) % SENDERS].append(path)
    for share in shares:
        rng.shuffle(share)

    senders = SenderHistory()
    with processes() as started:
        worker = subprocess.Popen(
            runner_command(deployment), cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        started.append(worker)
        running = []
        for share in shares:
            process = subprocess.Popen(
                [*ingest_command(deployment), *map(str, share)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            started.append(process)
            running.append((process, share))
        for number, (process, share) in enumerate(running):
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err
            senders.add_cli(f"sender-{number}", share, out)
        worker.communicate(timeout=120)
    assert run_runner(deployment).returncode == 0  # what arrived after the first one idled

    told = Counter((d.sha256, d.told) for d in senders.deliveries)
    for path in paths:
        sha = next(d.sha256 for d in senders.deliveries if d.path == path)
        assert told[(sha, "accepted")] == 1, f"{path.name}: {told}"
        assert told[(sha, "duplicate")] == COPIES - 1
    report = record("8 senders x 3 deliveries", deployment.check(senders)).assert_ok()
    assert report.deliveries == COPIES * len(paths)
    assert report.posted == report.expected_journals > 0
