"""`chipledger bench --scale N`: a ledger of N entries against one of 10,000, in one run.

Both ledgers are built here, from `tools.bench_custody`'s deterministic custody (customers
grow with N, one per 2,000 entries and at least 5, so that a customer's own volume is about
constant: a decade-scale ledger has more customers, and the per-party answers, an allocation's
batch list or a party's flags, are proportional to that party's volume), through
`Ledger.submit_batch` in batches of 100 signed beforehand, with the log key. Both are then
measured from outside: `chipledger serve` of each (start time, RSS, p50 and p99 of every read
now, at an `as_of` seq and at an `as_of` time, the two servers read alternately) and
`chipledger audit` of each (time, peak memory). Not a correctness test: tests/ is.
"""

from __future__ import annotations

import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ledger.ahead import usable_cores
from ledger.application import Ledger
from ledger.errors import BadRequest
from ledger.signing import write_secret
from ledger.wire import format_time
from tools.bench import BenchFailed, _describe, _postgres_schemas, analyze, signer
from tools.bench_custody import ScaleWorld
from tools.bench_probe import AuditRun, Request, rss, run_audit, serving, time_reads
from tools.bench_report import Measured, ScaleReport
from tools.bench_world import START, Catalog, customers_for

BASELINE = 10_000
READS, QUICK_READS = 200, 30
BUDGET_S, QUICK_BUDGET_S = 60.0, 15.0  # per measure and ledger; then at least 3 reads
LOG_KEY = signer("scale:log")
ANALYZE_EVERY = 100_000  # entries between ANALYZEs of a PostgreSQL bench store
Progress = Callable[[str], None]


def _stderr(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


class HandClock:
    """The ledger's clock while it is built: the simulated time each batch is recorded at."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Built:
    store: str
    entries: int
    customers: int
    catalog: Catalog

    @property
    def batches(self) -> int:
        return self.catalog.batches.seen


def build(store: str, entries: int, progress: Progress) -> Built:
    """A new ledger of exactly `entries` entries in `store`, checkpointed by the log key."""
    origin = f"chipledger.local/bench-{entries}"
    world, clock = ScaleWorld(entries, origin), HandClock(START)
    ledger = Ledger(store, clock=clock)
    try:
        ledger.initialise(origin, world.stream.key("bis").public_key_b64, LOG_KEY.public_key)
        ledger.use_log_key(LOG_KEY)
        started = last = time.perf_counter()
        postgres = store.startswith(("postgresql://", "postgres://"))
        for when, envelopes in world.chunks():
            clock.now = when
            ledger.submit_batch({"envelopes": envelopes})
            if postgres and ledger.size() % ANALYZE_EVERY < len(envelopes):
                analyze(store)  # as autovacuum would (it may be off)
            if time.perf_counter() - last > 10:
                last = time.perf_counter()
                progress(f"  {ledger.size():,} of {entries:,} entries in {last - started:.0f} s")
        if postgres:
            analyze(store)
        if ledger.size() != entries:
            raise BenchFailed(f"the bench ledger holds {ledger.size()} entries, not {entries}")
    finally:
        ledger.close()
    return Built(store, entries, world.customers, world.catalog)


# -- what is read ---------------------------------------------------------------------------

KINDS = [  # name, path (with {} for the id, or a query parameter), what it picks from
    ("batch", "/v1/batches/{}", "batches"),
    ("history", "/v1/batches/{}/history", "batches"),
    ("serial", "/v1/serials/{}", "serials"),
    ("allocation", "/v1/parties/{}/allocation", "customers"),
    ("flags", "/v1/flags?party", "customers"),
    ("license", "/v1/licenses/{}", "licenses"),
    ("inclusion", "/v1/log/inclusion?seq", ""),
]
MODES = ("now", "as_of seq", "as_of time")


def plans(built: Built, rng: random.Random) -> dict[str, Callable[[], Request]]:
    """Each measure's request maker: `kind mode` -> a fresh request, ids picked at random
    among those that exist at the `as_of` picked (uniformly over the history)."""
    found: dict[str, Callable[[], Request]] = {}
    for kind, path, pool in KINDS:
        for mode in MODES if pool else MODES[:1]:
            found[f"{kind} {mode}"] = _maker(built, rng, path, pool, mode)
    return found


def _maker(
    built: Built, rng: random.Random, path: str, pool: str, mode: str
) -> Callable[[], Request]:
    def make() -> Request:
        for _ in range(1_000):  # an as_of before anything of the kind existed: draw again
            seq, at = _as_of(built, rng, mode)
            name = _pick(built.catalog, pool, seq, at, rng) if pool else None
            if not pool:
                name = str(rng.randrange(built.entries))
            if name is not None:
                return _request(path, name, seq, at)
        raise BenchFailed(f"found nothing to read for {path} {mode} in 1,000 tries")

    return make


def _request(path: str, name: str, seq: int | None, at: datetime | None) -> Request:
    params = {"as_of": str(seq)} if seq is not None else {}
    if at is not None:
        params = {"as_of": format_time(at)}
    if "?" in path:
        base, key = path.split("?")
        return Request(base, {key: name, **params})
    return Request(path.format(name), params)


def _as_of(built: Built, rng: random.Random, mode: str) -> tuple[int | None, datetime | None]:
    first, last = built.catalog.first_at, built.catalog.last_at
    assert first is not None
    assert last is not None
    if mode == "as_of seq":
        return rng.randrange(built.entries), None
    if mode == "as_of time":
        return None, (first + (last - first) * rng.random()).replace(microsecond=0)
    return None, None


def _pick(
    catalog: Catalog, pool: str, seq: int | None, at: datetime | None, rng: random.Random
) -> str | None:
    """An id of `pool` that exists as of `seq` or `at` (now when neither), or None."""
    items = {"batches": catalog.batches.items, "serials": catalog.serials.items,
             "licenses": catalog.licenses, "customers": catalog.customers}[pool]  # fmt: skip
    for _ in range(50):
        item = rng.choice(items)
        if item.exists(seq, at):
            return item.name
    return None


# -- both ledgers, measured ----------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    start_s: float
    rss_start: int
    rss_reads: int
    rss_peak: int
    reads: dict[str, list[float]]


def serve_and_read(
    built: Sequence[Built], log_key: Path, reads: int, budget_s: float, progress: Progress
) -> list[Served]:
    """Both ledgers served at once, each started and timed in turn, then read alternately."""
    progress("serving both ledgers and timing their reads, alternately")
    with ExitStack() as stack:
        servers = [stack.enter_context(serving(b.store, log_key, b.entries)) for b in built]
        targets = [(server.client, plans(each, random.Random(7)))
                   for server, each in zip(servers, built, strict=True)]  # fmt: skip
        timings = time_reads(targets, reads, budget_s, progress)
        after = [rss(server.pid) for server in servers]
    return [Served(s.start_s, s.rss_start, a[0], a[1], t)
            for s, a, t in zip(servers, after, timings, strict=True)]  # fmt: skip


def measured(built: Built, served: Served, audited: AuditRun) -> Measured:
    return Measured(
        entries=built.entries, batches=built.batches, customers=built.customers,
        first_at=built.catalog.first_at, last_at=built.catalog.last_at, start_s=served.start_s,
        rss_start=served.rss_start, rss_reads=served.rss_reads, rss_peak=served.rss_peak,
        reads=served.reads, audit_s=audited.seconds, audit_rss=audited.max_rss,
        audit_pss=audited.peak_pss,
    )  # fmt: skip


def run(
    *,
    scale: int,
    baseline: int = BASELINE,
    store: str | None = None,
    reads: int | None = None,
    quick: bool = False,
    progress: Progress = _stderr,
) -> ScaleReport:
    """Build and measure a ledger of `baseline` entries and one of `scale`, in this run.
    `store`: a directory for the SQLite files, or a postgresql:// URL (fresh schemas)."""
    if not 100 <= baseline <= scale:
        raise BadRequest(f"--scale ({scale:,}) must be at least the baseline ({baseline:,}), "
                         "and the baseline at least 100")  # fmt: skip
    reads = reads or (QUICK_READS if quick else READS)
    budget_s = QUICK_BUDGET_S if quick else BUDGET_S
    with scratch(store) as (new_store, directory):
        log_key = directory / "log.key"
        write_secret(log_key, LOG_KEY)
        built = []
        for name, entries in (("baseline", baseline), ("scale", scale)):
            progress(f"building a ledger of {entries:,} entries "
                     f"({customers_for(entries):,} customers)")  # fmt: skip
            built.append(build(new_store(name), entries, progress))
        served = serve_and_read(built, log_key, reads, budget_s, progress)
        audits = []
        for each in built:
            progress(f"auditing the {each.entries:,}-entry ledger")
            audits.append(run_audit(each.store, log_key))
    small, large = map(measured, built, served, audits)
    return ScaleReport(small=small, large=large, store=_describe(store), cores=usable_cores(),
                       reads=reads, budget_s=budget_s)  # fmt: skip


# -- stores ---------------------------------------------------------------------------------


@contextmanager
def scratch(base: str | None) -> Iterator[tuple[Callable[[str], str], Path]]:
    """A temporary directory (for the log key, and the SQLite files unless `base` is a
    postgresql:// URL, then fresh schemas there), all removed at the end."""
    postgres = base is not None and base.startswith(("postgresql://", "postgres://"))
    if base is not None and "://" in base and not postgres:
        raise BadRequest(f"the store {base!r} is neither a directory nor a postgresql:// URL")
    if base is not None and not postgres:
        Path(base).mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="chipledger-scale-", dir=None if postgres else base))
    try:
        if postgres:
            assert base is not None
            with _postgres_schemas(base) as new_store:
                yield new_store, directory
        else:
            yield (lambda name: str(directory / f"{name}.db")), directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
