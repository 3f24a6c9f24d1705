"""Signatures of a batch verified ahead of time, on another core.

libsodium runs without Python's lock, so while the pipeline works through a batch in order,
a worker thread verifies the signatures it can already attribute (keys registered when the
batch began, or introduced by the batch). The pipeline takes a verdict only for the same
envelope, key id and public key; for anything else it verifies itself, so the result of
acceptance never depends on this module, only its speed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ledger.acceptance import COMMANDS
from ledger.crypto import PAYLOAD_TYPE, decode_public_key, key_id, pae, verify
from ledger.envelopes import Decoded

Job = tuple[int, str, bytes, bytes, bytes]  # envelope index, key id, public key, message, sig


class Prefetch:
    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self._executor = executor
        self._verdicts: dict[tuple[int, str], tuple[bytes, bool]] = {}
        self._stop = threading.Event()

    def start(
        self,
        batch: Sequence[Decoded | None],
        registered: Callable[[str], tuple[str, bytes] | None],
    ) -> None:
        self._executor.submit(self._run, _jobs(batch, registered))

    def _run(self, jobs: list[Job]) -> None:
        for index, kid, public, message, sig in jobs:
            if self._stop.is_set():
                return
            self._verdicts[(index, kid)] = (public, verify(public, message, sig))

    def checked(self, index: int) -> Callable[[str, bytes], bool | None]:
        def verdict(kid: str, public: bytes) -> bool | None:
            found = self._verdicts.get((index, kid))
            return found[1] if found is not None and found[0] == public else None

        return verdict

    def stop(self) -> None:
        self._stop.set()


def _jobs(
    batch: Sequence[Decoded | None], registered: Callable[[str], tuple[str, bytes] | None]
) -> list[Job]:
    introduced: dict[str, bytes] = {}
    jobs: list[Job] = []
    for index, decoded in enumerate(batch):
        if decoded is None:
            continue
        for text in COMMANDS[decoded.event.type].introduced(decoded.event):
            public = decode_public_key(text)
            introduced[key_id(public)] = public
        message = pae(PAYLOAD_TYPE, decoded.payload)
        for kid, sig in decoded.signatures:
            known = registered(kid)
            public_key = introduced.get(kid) or (known[1] if known else None)
            if public_key is not None:
                jobs.append((index, kid, public_key, message, sig))
    return jobs
