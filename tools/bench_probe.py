"""The scale bench's probes: a real `chipledger serve` and `chipledger audit`, from outside.

`Server` spawns `serve --port 0 --open-reads` and times it from spawn to the first 200 of
`GET /v1/ledger`; `rss` reads a process's VmRSS and VmHWM from /proc; `time_reads` times GET
requests over one keep-alive httpx client; `run_audit` times an audit and measures its memory:
the largest process's peak (`os.wait4` on that child alone) and the peak of the sum of its
processes' PSS (sampled from /proc). Linux only. Any non-200 answer is a failed bench.
"""

from __future__ import annotations

import math
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tools.bench import BenchFailed

CLI = [sys.executable, "-c", "from tools.cli import run; run()"]  # = the `chipledger` script
TIMEOUT_S = 120.0  # per request: today's as_of reads take long at scale, but not forever
START_TIMEOUT_S = 600.0
IDLE_TIMEOUT_S = 3_600.0  # waiting for serve to finish a request that timed out
Progress = Callable[[str], None]


def rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in bytes."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = int(value.split()[0]) * 1024
    return found["VmRSS"], found["VmHWM"]


# -- the server -----------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    start_s: float
    rss_start: int  # bytes, right after the first answer
    client: httpx.Client

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def serving(store: str, log_key: Path, entries: int) -> Iterator[Server]:
    """`chipledger serve` on a free port, answering; stopped (by its pid) at the end."""
    spawned = time.perf_counter()
    process = subprocess.Popen(  # noqa: S603 (our own interpreter and command line)
        [*CLI, "serve", "--store", store, "--log-key", str(log_key), "--port", "0",
         "--open-reads"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines, tail = _read_lines(process)
        url = _listening(process, lines, tail, spawned)
        with httpx.Client(base_url=url, timeout=TIMEOUT_S) as client:
            info = _first_answer(client, spawned)
            start_s = time.perf_counter() - spawned
            if info.status_code != 200 or info.json()["size"] != entries:
                raise BenchFailed(f"GET /v1/ledger answered {info.status_code}: {info.text[:300]}")
            yield Server(process, url, start_s, rss(process.pid)[0], client)
    finally:
        _stop(process)


def _first_answer(client: httpx.Client, spawned: float) -> httpx.Response:
    left = START_TIMEOUT_S - (time.perf_counter() - spawned)
    try:
        return client.get("/v1/ledger", timeout=max(left, 0.001))
    except httpx.HTTPError as exc:
        raise BenchFailed(f"serve did not answer GET /v1/ledger ({exc!r})") from None


def _read_lines(process: subprocess.Popen[str]) -> tuple[queue.Queue[str | None], deque[str]]:
    """The server's standard error, line by line, read on a thread (so the pipe never fills)."""
    lines: queue.Queue[str | None] = queue.Queue()
    tail: deque[str] = deque(maxlen=20)

    def pump() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            tail.append(line.rstrip())
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines, tail


def _listening(
    process: subprocess.Popen[str], lines: queue.Queue[str | None], tail: deque[str], since: float
) -> str:
    """Wait (bounded) for `listening on http://HOST:PORT`; the URL."""
    while True:
        left = START_TIMEOUT_S - (time.perf_counter() - since)
        try:
            line = lines.get(timeout=max(left, 0.001))
        except queue.Empty:
            raise BenchFailed(f"serve did not listen within {START_TIMEOUT_S:.0f} s") from None
        if line is None:
            shown = " | ".join(tail)
            raise BenchFailed(f"serve exited ({process.wait()}) before listening: {shown}")
        if line.startswith("listening on "):
            return line.removeprefix("listening on ").strip()


def _stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- reads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    path: str
    params: dict[str, str]

    def text(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in self.params.items())
        return f"GET {self.path}" + (f"?{query}" if query else "")


Plans = dict[str, Callable[[], Request]]


def time_reads(
    targets: Sequence[tuple[httpx.Client, Plans]], reads: int, budget_s: float, progress: Progress
) -> list[dict[str, list[float]]]:
    """Seconds of each measure's requests on each server, in rounds: each measure on each
    server in turn (so that noise falls on all alike), after one uncounted request of each.
    A measure stops at `reads` requests, or at 3 once it has spent `budget_s` on that server
    (its warm-up included); a request without an answer within TIMEOUT_S counts as infinitely
    slow and ends its measure there."""
    found: list[dict[str, list[float]]] = [{name: [] for name in plans} for _, plans in targets]
    spent = [{name: _sample(client, plan(), got[name], warm=True) for name, plan in plans.items()}
             for (client, plans), got in zip(targets, found, strict=True)]  # fmt: skip
    last = time.perf_counter()
    for done in range(1, reads + 1):
        going = 0
        for name in targets[0][1]:
            for (client, plans), got, used in zip(targets, found, spent, strict=True):
                if _going(got[name], used[name], budget_s):
                    used[name] += _sample(client, plans[name](), got[name])
                    going += 1
        if time.perf_counter() - last > 15:
            last = time.perf_counter()
            progress(f"  round {done} of {reads}: {going} measures going")
    return found


def _going(samples: list[float], spent: float, budget_s: float) -> bool:
    if samples and math.isinf(samples[-1]):
        return False
    return spent <= budget_s or len(samples) < 3


def _sample(client: httpx.Client, request: Request, into: list[float], warm: bool = False) -> float:
    """Time one request into `into` (unless `warm`); after a time-out, wait for the server to
    finish that request (it holds the ledger's lock), so that the next one finds it idle."""
    try:
        seconds = timed_get(client, request)
    except TimedOut:
        seconds = math.inf
        warm = False
        try:
            client.get("/v1/ledger", timeout=IDLE_TIMEOUT_S)
        except httpx.HTTPError as exc:
            what = f"after {request.text()} timed out, serve did not recover ({exc!r})"
            raise BenchFailed(what) from None
    if not warm:
        into.append(seconds)
    return seconds


class TimedOut(BenchFailed):
    """A request got no answer within TIMEOUT_S."""


def timed_get(client: httpx.Client, request: Request) -> float:
    start = time.perf_counter()
    try:
        response = client.get(request.path, params=request.params)
    except httpx.TimeoutException:
        raise TimedOut(f"{request.text()} got no answer within {TIMEOUT_S:.0f} s") from None
    except httpx.HTTPError as exc:
        raise BenchFailed(f"{request.text()} failed: {exc!r}") from None
    seconds = time.perf_counter() - start
    if response.status_code != 200:
        raise BenchFailed(
            f"{request.text()} answered {response.status_code}: {response.text[:300]}"
        )
    return seconds


def percentile(values: Sequence[float], p: float) -> float:
    """The nearest-rank percentile (p in 0..100) of `values`."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


# -- the audit ------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditRun:
    seconds: float
    max_rss: int  # bytes: the peak RSS of its largest process (the audit or a worker)
    peak_pss: int  # bytes: the peak of the sum of its processes' PSS, sampled


def run_audit(store: str, log_key: Path) -> AuditRun:
    """`chipledger audit --store S --log-key K` as a child of its own, timed and measured."""
    with tempfile.TemporaryFile("w+") as out:
        start = time.perf_counter()
        process = subprocess.Popen(  # noqa: S603 (our own interpreter and command line)
            [*CLI, "audit", "--store", store, "--log-key", str(log_key)],
            stdout=out, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        sampler = PssSampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)  # this child (and what it waited for) only
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        sampler.stop()
        if process.returncode != 0:
            out.seek(0)
            raise BenchFailed(
                f"the audit of {store} exited {process.returncode}: {out.read()[-600:]}"
            )
    return AuditRun(seconds, usage.ru_maxrss * 1024, sampler.peak)


class PssSampler(threading.Thread):
    """Polls the proportional set size (PSS) of a process and its descendants, summed: forked
    workers share pages, which a sum of RSS would count twice."""

    def __init__(self, root: int, every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.root, self.every_s, self.peak = root, every_s, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, sum(_pss(pid) for pid in _tree(self.root)))
            self._done.wait(self.every_s)

    def stop(self) -> None:
        self._done.set()
        self.join()


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _pss(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # gone, or a zombie: it holds nothing
        return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    return 0
