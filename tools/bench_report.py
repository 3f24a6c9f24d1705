"""The scale bench's report: what one ledger measured, and the table comparing two.

`ScaleReport.text()` is what `chipledger bench --scale N` prints: header lines with both
ledgers' sizes, then measure | at the baseline | at N | ratio | target | result, then how each
was measured. `passed` is False when a target is missed (the command then exits 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tools.bench_probe import TIMEOUT_S, percentile
from tools.bench_world import ENTRIES_PER_CUSTOMER, MIN_CUSTOMERS, SAMPLE

START_TARGET_S = 2.0  # serve answers within this long of being spawned, at N
RSS_TARGET_MB = 300  # the server's RSS at N, under
P50_TARGET = 2.0  # every read's p50 at N / at the baseline, at most
AUDIT_TARGET_MB = 500  # the audit's peak memory at N, under
MB = 1 << 20
PATHS = {
    "batch": "/v1/batches/{id}", "history": "/v1/batches/{id}/history",
    "serial": "/v1/serials/{serial}", "allocation": "/v1/parties/{id}/allocation",
    "flags": "/v1/flags?party={id}", "license": "/v1/licenses/{id}",
    "inclusion": "/v1/log/inclusion?seq={seq}",
}  # fmt: skip
SHOWN_MODES = {"now": "now", "as_of seq": "as_of=<seq>", "as_of time": "as_of=<time>"}


@dataclass(frozen=True)
class Measured:
    """One ledger: its size, and what its server and its audit measured."""

    entries: int
    batches: int
    customers: int
    first_at: datetime | None
    last_at: datetime | None
    start_s: float
    rss_start: int  # bytes
    rss_reads: int
    rss_peak: int
    reads: dict[str, list[float]]  # measure -> seconds of each request
    audit_s: float
    audit_rss: int
    audit_pss: int

    def size(self) -> str:
        first, last = (f"{t:%Y-%m-%d}" if t else "?" for t in (self.first_at, self.last_at))
        return (f"{self.entries:,} entries, {self.batches:,} batches, {self.customers:,} "
                f"customers, events' `at` from {first} to {last}")  # fmt: skip


@dataclass(frozen=True)
class Row:
    what: str
    small: str
    large: str
    ratio: str
    target: str
    passed: bool | None


@dataclass(frozen=True)
class ScaleReport:
    small: Measured
    large: Measured
    store: str
    cores: int
    reads: int
    budget_s: float

    @property
    def passed(self) -> bool:
        return all(row.passed is not False for row in self.rows())

    def rows(self) -> list[Row]:
        return [*self._server_rows(), *self._read_rows(), *self._audit_rows()]

    def _server_rows(self) -> list[Row]:
        s, n = self.small, self.large
        start = f"<= {START_TARGET_S:g} s at N"
        rows = [_row("serve: spawn to first 200 of GET /v1/ledger", s.start_s, n.start_s,
                     "s", start, n.start_s <= START_TARGET_S)]  # fmt: skip
        for what, small, large in [
            ("server RSS after start", s.rss_start, n.rss_start),
            ("server RSS after the reads", s.rss_reads, n.rss_reads),
            ("server peak RSS (VmHWM)", s.rss_peak, n.rss_peak),
        ]:
            rows.append(_row(what, small / MB, large / MB, "MB", f"< {RSS_TARGET_MB} MB at N",
                             large / MB < RSS_TARGET_MB))  # fmt: skip
        return rows

    def _read_rows(self) -> list[Row]:
        rows = []
        for name, small in self.small.reads.items():
            large = self.large.reads[name]
            kind, mode = name.split(" ", 1)
            label = f"GET {PATHS[kind]} {SHOWN_MODES[mode]}"
            p50s = (percentile(small, 50) * 1e3, percentile(large, 50) * 1e3)
            p99s = (percentile(small, 99) * 1e3, percentile(large, 99) * 1e3)
            rows.append(_row(f"p50 {label}", *p50s, "ms", f"ratio <= {P50_TARGET:g}",
                             _within(p50s), (len(small), len(large)),
                             self.reads))  # fmt: skip
            rows.append(_row(f"p99 {label}", *p99s, "ms", "", None, (len(small), len(large)),
                             self.reads))  # fmt: skip
        return rows

    def _audit_rows(self) -> list[Row]:
        s, n = self.small, self.large
        target = f"< {AUDIT_TARGET_MB} MB at N"
        return [
            _row("audit: wall time", s.audit_s, n.audit_s, "s", "", None),
            _row("audit peak RSS, its largest process (wait4)", s.audit_rss / MB,
                 n.audit_rss / MB, "MB", target, n.audit_rss / MB < AUDIT_TARGET_MB),
            _row("audit peak PSS, all its processes (sampled)", s.audit_pss / MB,
                 n.audit_pss / MB, "MB", target, n.audit_pss / MB < AUDIT_TARGET_MB),
        ]  # fmt: skip

    def text(self) -> str:
        s, n = self.small, self.large
        header = ("measure", f"at {s.entries:,}", f"at {n.entries:,}", "ratio", "target",
                  "result")  # fmt: skip
        result = {True: "pass", False: "FAIL", None: ""}
        cells = [(r.what, r.small, r.large, r.ratio, r.target, result[r.passed])
                 for r in self.rows()]  # fmt: skip
        return "\n".join([*self._header(), "", *_table(header, cells), "", *self._notes()])

    def _header(self) -> list[str]:
        s, n = self.small, self.large
        return [
            f"chipledger bench --scale {n.entries:,}: a ledger of {n.entries:,} entries against "
            f"one of {s.entries:,}, both built and measured in this run; ratio = at "
            f"{n.entries:,} / at {s.entries:,}",
            f"  at {s.entries:,}: {s.size()}",
            f"  at {n.entries:,}: {n.size()}",
            f"customers grow with N: one per {ENTRIES_PER_CUSTOMER:,} entries, at least "
            f"{MIN_CUSTOMERS}, so that a customer's own volume is about constant; the per-party "
            "answers (an allocation's batch list, a party's flags) are proportional to it",
            f"store: {self.store}; cores usable: {self.cores}",
        ]

    def _notes(self) -> list[str]:
        return [
            "serve: `chipledger serve --store S --log-key K --port 0 --open-reads`, timed from "
            "spawning it to the first 200 of GET /v1/ledger; RSS: VmRSS of that process from "
            "/proc after that answer and after the reads, VmHWM its peak",
            f"reads: up to {self.reads} requests per measure and ledger (n=K where a measure "
            f"stopped early, having spent {self.budget_s:g} s); both ledgers served at once, "
            "each request of a measure on one followed by one on the other, round by round "
            "over every measure (so that noise falls on both alike), one keep-alive httpx "
            "client each, after one uncounted request of each measure; ids picked uniformly "
            "among "
            f"those existing at the as_of picked (from a uniform sample of {SAMPLE:,} ids of "
            "each kind), as_of seqs and times uniform over the history, parties among the "
            "customers; any answer but 200 fails the bench; a request without an answer "
            f"within {TIMEOUT_S:g} s is shown as timed out and ends its measure",
            "now: the server's clock is the real time, after the simulated history ends, so the "
            "time-judged flags (not-installed, attestation-overdue) of a read now count every "
            "batch left as it was",
            "audit: `chipledger audit --store S --log-key K` (its default workers, one per "
            "core), wall time; ru_maxrss of os.wait4 on that child (the largest of it and the "
            "workers it waited for), and the peak of the sum of their PSS, sampled every 0.1 s",
        ]


def _within(p50s: tuple[float, float]) -> bool:
    small, large = p50s
    return math.isfinite(small) and math.isfinite(large) and large <= P50_TARGET * small


def _row(
    what: str, small: float, large: float, unit: str, target: str, passed: bool | None,
    counts: tuple[int, int] | None = None, wanted: int = 0,
) -> Row:  # fmt: skip
    form = {"s": "{:,.2f} s", "ms": "{:,.2f} ms", "MB": "{:,.0f} MB"}[unit]
    shown = [form.format(v) if math.isfinite(v) else "timed out" for v in (small, large)]
    if counts is not None:
        shown = [
            t + (f" (n={c})" if c < wanted else "") for t, c in zip(shown, counts, strict=True)
        ]
    finite = math.isfinite(small) and math.isfinite(large)
    ratio = f"{large / small:.2f}" if small > 0 and finite else "-"
    return Row(what, shown[0], shown[1], ratio, target, passed)


def _table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *cells]]  # fmt: skip
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines
