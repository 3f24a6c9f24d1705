"""The schema and signature stages of a batch, run ahead on another core.

Decoding an envelope (PROTOCOL.md section 5, schema stage) needs no state, and a verdict
"this signature verifies under this public key over these bytes" holds whatever the state.
So while this core judges envelope after envelope, a worker process decodes the next ones and
verifies their signatures under the keys their key ids name. Nothing is decided there: the
acceptance pipeline still chooses which key a key id stands for when it judges, uses a verdict
only for exactly that key, and verifies inline every signature that has none. A worker that
is slow, not yet started or gone costs speed, never a different result: its chunk is decoded
here instead, and its late reply dropped.

One worker (`python -m ledger.ahead`) per ledger process, started by the first batch big
enough to use it, shared under a lock (a ledger that finds it busy works inline). Jobs and
replies are length-prefixed pickles over the worker's standard input and output, tagged with
a job number; this process never blocks writing to it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import select
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ledger.crypto import verify
from ledger.envelopes import Decoded, decode
from ledger.errors import LedgerError

MIN_BATCH = 8  # smaller batches are decoded here: the pipe would cost more than it saves
CHUNKS = (8,)  # the first chunk is done here while the worker starts on the next ones
CHUNK = 8
IN_FLIGHT = 4  # chunks the worker holds at a time
WAIT = 0.5  # seconds without news of a chunk before the worker is given up (inline from then)
_FRAME = struct.Struct("<I")

Verified = frozenset[tuple[str, bytes]]  # (key id, public key) of signatures that verify
Prepared = tuple[Decoded | LedgerError, Verified]
KeyLookup = Callable[[str], bytes | None]


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def prepare(
    values: Sequence[Any], origin: str, now: datetime, keys: dict[str, bytes]
) -> list[Prepared]:
    """Decode each envelope, and verify its signatures under `keys` (key id -> public key)."""
    out: list[Prepared] = []
    for value in values:
        try:
            decoded = decode(value, origin, now)
        except LedgerError as exc:
            out.append((exc, frozenset()))
            continue
        message = decoded.message
        verified = frozenset(
            (kid, keys[kid])
            for kid, signature in decoded.signatures
            if kid in keys and verify(keys[kid], message, signature)
        )
        out.append((decoded, verified))
    return out


def key_ids(value: Any) -> list[str]:
    """The key ids an envelope's signatures name, read without trusting its shape."""
    signatures = value.get("signatures") if isinstance(value, dict) else None
    if not isinstance(signatures, list):
        return []
    return [
        s["keyid"] for s in signatures if isinstance(s, dict) and isinstance(s.get("keyid"), str)
    ]


# -- the worker process ---------------------------------------------------------------------


def _serve() -> None:
    """Prepare jobs from standard input, reply on standard output, until input closes."""
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sink.write(_frame(pickle.dumps((0, []))))  # ready
    sink.flush()
    while len(head := source.read(_FRAME.size)) == _FRAME.size:
        job = source.read(_FRAME.unpack(head)[0])
        number, origin, now, keys, values = pickle.loads(job)  # noqa: S301 (our parent's)
        try:
            reply = pickle.dumps((number, prepare(values, origin, now, keys)))
        except Exception:
            reply = pickle.dumps((number, None))
        sink.write(_frame(reply))
        sink.flush()


def _frame(data: bytes) -> bytes:
    return _FRAME.pack(len(data)) + data


class Worker:
    """The worker process and its pipes. After any failure there is none (inline from then)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._failed = False
        self.ready = False
        self._next_job = 0
        self._outbox = bytearray()
        self._inbox = bytearray()
        self.replies: dict[int, list[Prepared] | None] = {}

    def start(self) -> bool:
        if self._process is None and not self._failed:
            home = str(Path(__file__).resolve().parents[1])
            path = os.pathsep.join(p for p in (home, os.environ.get("PYTHONPATH")) if p)
            try:
                self._process = subprocess.Popen(
                    # -P: never this process's working directory first on the path, so the
                    # worker runs this ledger's own code, found through PYTHONPATH
                    [sys.executable, "-P", "-m", "ledger.ahead"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    bufsize=0,
                    env={**os.environ, "PYTHONPATH": path},
                )
                assert self._process.stdin is not None
                os.set_blocking(self._process.stdin.fileno(), False)
            except OSError:
                self._failed = True
        return self._process is not None

    def send(self, origin: str, now: datetime, keys: dict[str, bytes], values: list[Any]) -> int:
        """Queue a job; its number."""
        self._next_job += 1
        self._outbox += _frame(pickle.dumps((self._next_job, origin, now, keys, values)))
        self.pump(0)
        return self._next_job

    def pump(self, timeout: float) -> None:
        """Write what the pipe takes, read what has arrived; wait up to `timeout` for either."""
        process = self._process
        if process is None or process.stdin is None or process.stdout is None:
            return
        stdin, stdout = process.stdin.fileno(), process.stdout.fileno()
        try:
            readable, writable, _ = select.select(
                [stdout], [stdin] if self._outbox else [], [], timeout
            )
            if writable:
                with contextlib.suppress(BlockingIOError):
                    del self._outbox[: os.write(stdin, self._outbox)]
            while readable:
                chunk = os.read(stdout, 1 << 20)
                if not chunk:
                    raise OSError("the worker stopped")
                self._inbox += chunk
                readable = select.select([stdout], [], [], 0)[0]
        except OSError:
            self.fail()
            return
        self._unframe()

    def _unframe(self) -> None:
        while len(self._inbox) >= _FRAME.size:
            (size,) = _FRAME.unpack_from(self._inbox)
            if len(self._inbox) < _FRAME.size + size:
                return
            reply = self._inbox[_FRAME.size : _FRAME.size + size]
            number, results = pickle.loads(reply)  # noqa: S301 (our own worker's)
            del self._inbox[: _FRAME.size + size]
            if number == 0:
                self.ready = True
            else:
                self.replies[number] = results

    def fail(self) -> None:
        self._failed = True
        self.ready = False
        if self._process is not None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def stop(self) -> None:
        """End the worker: it exits when its input closes."""
        if self._process is not None and self._process.stdin is not None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        self.ready = False


_WORKER = Worker()
atexit.register(_WORKER.stop)


class Ahead:
    """One batch's envelopes, prepared in chunks, in order.

    Chunk 0 is done here while the worker starts on the next ones; the worker is kept
    `IN_FLIGHT` chunks ahead, from the front. Waiting for a chunk, this process prepares the
    last unassigned one (from the back) rather than sit idle; a chunk the worker does not
    deliver within `WAIT` is done here."""

    def __init__(
        self, worker: Worker | None, values: Sequence[Any], origin: str, now: datetime
    ) -> None:
        self._worker = worker if worker is not None and worker.ready else None
        self._values = values
        self._origin = origin
        self._now = now
        self._bounds = _bounds(len(values))
        self._done: dict[int, list[Prepared]] = {}
        self._pending = deque(range(1, len(self._bounds)) if self._worker else ())
        self._jobs: dict[int, int] = {}  # chunk -> job number
        self._keys: dict[str, bytes] = {}

    def chunks(self, key: KeyLookup) -> Iterator[list[Prepared]]:
        self._assign(key)
        for index in range(len(self._bounds)):
            if index not in self._jobs and index not in self._done:
                with contextlib.suppress(ValueError):
                    self._pending.remove(index)
                self._here(index)
            while index not in self._done:
                self._collect(index)
            self._assign(key)
            yield self._done.pop(index)

    def _here(self, index: int) -> None:
        start, stop = self._bounds[index]
        self._done[index] = prepare(self._values[start:stop], self._origin, self._now, {})

    def _assign(self, key: KeyLookup) -> None:
        worker = self._worker
        while worker is not None and self._pending and len(self._jobs) < IN_FLIGHT:
            index = self._pending.popleft()
            start, stop = self._bounds[index]
            values = list(self._values[start:stop])
            for kid in {k for value in values for k in key_ids(value)} - self._keys.keys():
                if (public := key(kid)) is not None:
                    self._keys[kid] = public
            # What cannot be shipped is done here, where decoding says what is wrong.
            with contextlib.suppress(RecursionError, pickle.PicklingError, TypeError, ValueError):
                self._jobs[index] = worker.send(self._origin, self._now, dict(self._keys), values)

    def _collect(self, index: int) -> None:
        """Wait for the worker's chunk `index`, working meanwhile; or do it here."""
        worker = self._worker
        number = self._jobs.get(index)
        deadline = time.monotonic() + WAIT
        while worker is not None and number is not None and worker.ready:
            worker.pump(0)
            if number in worker.replies:
                del self._jobs[index]
                if (reply := worker.replies.pop(number)) is not None:
                    self._done[index] = reply
                    return
                break  # the worker could not prepare it: this process shows why
            if self._pending:
                self._here(self._pending.pop())  # steal from the back
                deadline = time.monotonic() + WAIT
                continue
            if (left := deadline - time.monotonic()) <= 0:
                worker.fail()  # stuck: never wait for it again
                break
            worker.pump(left)
        self._jobs.pop(index, None)
        self._here(index)


def _bounds(size: int) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for step in (*CHUNKS, *[CHUNK] * ((size + CHUNK - 1) // CHUNK)):
        if start >= size:
            break
        bounds.append((start, min(size, start + step)))
        start += step
    return bounds


@contextmanager
def ahead(values: Sequence[Any], origin: str, now: datetime) -> Iterator[Ahead]:
    """A batch's envelopes to prepare: with the worker when the batch is big enough, there
    is a core to spare, it is not turned off (`CHIPLEDGER_AHEAD=0`) and no other batch holds
    it; else all here."""
    if (
        len(values) < MIN_BATCH
        or usable_cores() < 2
        or os.environ.get("CHIPLEDGER_AHEAD", "1") == "0"
        or not _WORKER.lock.acquire(blocking=False)
    ):
        yield Ahead(None, values, origin, now)
        return
    try:
        _WORKER.start()
        _WORKER.pump(0)  # take in what arrived since the last batch (late replies, ready)
        _WORKER.replies.clear()
        yield Ahead(_WORKER, values, origin, now)
    finally:
        _WORKER.lock.release()


if __name__ == "__main__":
    _serve()
