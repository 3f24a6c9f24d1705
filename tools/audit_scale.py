"""How `chipledger audit` scales: a realistic SQLite ledger of N entries, and the peak memory
(ru_maxrss) and time of a child process auditing it.

    python -m tools.audit_scale build STORE ENTRIES   # a new ledger (refuses an existing file)
    python -m tools.audit_scale measure STORE [AUDIT OPTIONS...]

The ledger: the bench's registry (`tools.bench`), then families of three batches, each
fabricated, exported to a buyer, delivered to its site, split in two, one part installed and
the other transferred to another buyer's site (six entries), sent in batches of 100 envelopes
with the clock moving on one second per commit, and a checkpoint signed with each. `measure`
must run in a process of its own: ru_maxrss of the children counts every child it waited for.
Not a test: tests/test_audit.py is.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

from ledger.application import Ledger
from tools.bench import BUYERS, NOW, ORIGIN, World, buyer, envelope_hash, signer, site_of

FAMILY = 6  # entries per family of batches
WAVE = 100  # families signed step by step together: a batch of 100 envelopes is one step


class MovingClock:
    """The ledger's clock: one second later at each commit (each asks it once)."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def families(world: World, first: int, count: int) -> list[dict[str, object]]:
    """The envelopes of `count` families from number `first`, step by step across them."""
    heads: dict[str, str] = {}
    steps: list[list[dict[str, object]]] = [[] for _ in range(FAMILY)]
    for number in range(first, first + count):
        for step, made in enumerate(_family(world, number, heads)):
            steps[step].append(made)
    return [envelope for step in steps for envelope in step]


def _family(world: World, number: int, heads: dict[str, str]) -> list[dict[str, object]]:
    parent, a, b = (f"fam-{number:07d}{suffix}" for suffix in ("", "-a", "-b"))
    owner, other = 1 + number % (BUYERS - 1), 1 + (number + 1) % (BUYERS - 1)

    def signed(kind: str, actor: str, signers: list[str], **fields: object) -> dict[str, object]:
        batch = str(fields["batch"])
        if batch in heads:
            fields["prev"] = heads[batch]
        made = world.sign(kind, actor, signers, 0, **fields)
        for name in (batch, *([a, b] if kind == "batch.split" else [])):  # a split heads its parts
            heads[name] = envelope_hash(made)
        return made

    return [
        signed("batch.fabricated", "nvidia", ["nvidia"], batch=parent, model="H200",
               quantity=64, country="TW"),
        signed("batch.exported", "nvidia", ["nvidia"], batch=parent, to=buyer(owner),
               destination="AE"),
        signed("batch.delivered", buyer(owner), [buyer(owner)], batch=parent,
               site=site_of(owner), quantity=64),
        signed("batch.split", buyer(owner), [buyer(owner)], batch=parent,
               into=[{"batch": a, "quantity": 40}, {"batch": b, "quantity": 24}]),
        signed("batch.installed", buyer(owner), [buyer(owner)], batch=a, site=site_of(owner)),
        signed("batch.transferred", buyer(owner), [buyer(owner), buyer(other)], batch=b,
               to=buyer(other), site=site_of(other)),
    ]  # fmt: skip


def build(store: str, entries: int) -> int:
    """A new ledger of about `entries` entries in `store`; the entries it holds."""
    if Path(store).exists():
        raise SystemExit(f"{store} exists; build makes a new ledger")
    world = World()
    ledger = Ledger(store, clock=MovingClock())
    ledger.initialise(ORIGIN, world.key("bis").public_key_b64, signer("log").public_key)
    ledger.use_log_key(signer("log"))
    ledger.submit_batch({"envelopes": world.registry()})
    number = 0
    while ledger.size() < entries:
        wave = families(world, number, WAVE)
        number += WAVE
        for start in range(0, len(wave), 100):
            if ledger.size() < entries:  # the last wave may end part way: families unfinished
                ledger.submit_batch({"envelopes": wave[start : start + 100]})
    size = ledger.size()
    ledger.close()
    return size


def measure(store: str, options: list[str]) -> tuple[float, int, str]:
    """Seconds, peak RSS (KiB) of the audit's processes, and what it printed."""
    command = [str(Path(sys.executable).with_name("chipledger")), "audit", "--store", store]
    started = time.perf_counter()
    done = subprocess.run([*command, *options], capture_output=True, text=True, check=False)  # noqa: S603
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, peak, done.stdout + done.stderr


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[0] == "build":
        started = time.perf_counter()
        size = build(argv[1], int(argv[2]))
        print(f"built {argv[1]}: {size:,} entries in {time.perf_counter() - started:.1f} s")
        return 0
    if len(argv) >= 2 and argv[0] == "measure":
        seconds, peak, output = measure(argv[1], argv[2:])
        print(output.rstrip())
        print(f"peak RSS {peak / 1024:.1f} MiB, {seconds:.2f} s")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
