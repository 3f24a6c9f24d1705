"""Many servers, one store: real `chipledger serve` processes racing conflicting writes.

Two servers on one PostgreSQL store (in a second run one of them with `--workers 2`; on SQLite
one server with `--workers 2`) get conflicting writes from threads at once: independent
fabrications, the same batch exported by both with the same `prev`, the same event id with
other bytes, the same batch id twice, and batch requests that overlap. Every answer is 201 or
409, never a 5xx; exactly one of each race wins; the log's seqs are dense, it holds exactly the
acknowledged envelopes, and each batch has one custody history; and a write acknowledged by one
server is in every server's next read. Driven by the independent client (PROTOCOL.md §5, §6, §8).
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.independent.client import (
    JSONObject,
    LedgerClient,
    ServerProcess,
    Signer,
    canonical,
    envelope_hash,
    make_event,
    payload_bytes,
    run_cli,
    sign,
)

BIS = Signer.from_label("servers: bis")
VENDOR = Signer.from_label("servers: acme")
BUYERS = {"gulf-cloud": Signer.from_label("servers: gulf"),
          "desert-ai": Signer.from_label("servers: desert")}  # fmt: skip
BARRIER_TIMEOUT = 30.0
RESENDS = 10  # how often a write that lost to unrelated writes (409) is sent again


@dataclass(frozen=True)
class Layout:
    """Servers on one store: one `chipledger serve` per entry of `workers` (its --workers)."""

    name: str
    workers: tuple[int, ...]
    scale: int  # fabrications per thread, and races of each kind


POSTGRES = [
    Layout("two-servers", workers=(1, 1), scale=3),
    Layout("workers-2-and-one-server", workers=(2, 1), scale=3),
]
SQLITE = Layout("sqlite-workers-2", workers=(2,), scale=2)


@dataclass
class Cluster:
    """The servers' URLs, an authority's read token, and every write answer seen."""

    urls: list[str]
    token: str = ""
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    accepted: dict[str, int] = field(default_factory=dict)  # envelope hash -> its seq
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _names: Iterator[int] = field(default_factory=itertools.count)
    _clients: dict[str, LedgerClient] = field(default_factory=dict)

    @property
    def pair(self) -> tuple[str, str]:
        """Two servers to race: different ones when there are two."""
        return self.urls[0], self.urls[-1]

    def name(self, prefix: str) -> str:
        with self._lock:
            return f"{prefix}-{next(self._names)}"

    def note(self, race: str, answer: httpx.Response) -> None:
        """Count an answer to a write; remember the receipts of an accepted one."""
        receipts: list[JSONObject] = []
        if answer.status_code == 201:
            body = answer.json()
            receipts = body.get("receipts", [body])
        with self._lock:
            self.answers[(race, answer.status_code)] += 1
            for receipt in receipts:
                assert receipt["envelope_hash"] not in self.accepted, "one envelope, two seqs"
                self.accepted[receipt["envelope_hash"]] = receipt["seq"]

    def client(self, url: str) -> LedgerClient:
        """The client of `url`, shared by the threads (making one costs ~0.1 s of CPU)."""
        with self._lock:
            if url not in self._clients:
                self._clients[url] = LedgerClient(url)
            return self._clients[url]

    def read(self, url: str, path: str) -> httpx.Response:
        return self.client(url).get(path, self.token)

    def close(self) -> None:
        for client in self._clients.values():
            client.close()


# --- starting servers ---------------------------------------------------------------------------


def init_store(directory: Path, store: str) -> Path:
    """`chipledger init` of `store` with BIS as its trust root; the log key's path."""
    (directory / "bis.pub").write_text(BIS.public_key_b64 + "\n")
    log_key = directory / "log.key"
    init = run_cli("init", "--store", store, "--authority-key", str(directory / "bis.pub"),
                   "--log-key", str(log_key))  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    return log_key


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[str, Layout], Cluster]]:
    """Starts the servers of a layout on a new ledger in `store`; stops them afterwards."""
    servers: list[ServerProcess] = []
    clusters: list[Cluster] = []

    def start_(store: str, layout: Layout) -> Cluster:
        log_key = init_store(tmp_path, store)
        servers.extend(ServerProcess(store, log_key, workers=n) for n in layout.workers)
        with ThreadPoolExecutor(len(servers)) as pool:  # each waits for its `listening on`
            clusters.append(Cluster(list(pool.map(ServerProcess.start, servers))))
        return clusters[-1]

    yield start_
    for cluster in clusters:
        cluster.close()
    for server in servers:
        server.stop()


# --- reading back -------------------------------------------------------------------------------


def checkpoint_size(cluster: Cluster, url: str) -> int:
    response = cluster.read(url, "/v1/log/checkpoint")
    assert response.status_code == 200, response.text
    return int(response.text.split("\n")[1])  # a C2SP checkpoint: origin, then tree size


def ledger_size(cluster: Cluster, url: str) -> int:
    response = cluster.read(url, "/v1/ledger")
    assert response.status_code == 200, response.text
    return int(response.json()["size"])


def assert_seen(cluster: Cluster, by: str, receipt: JSONObject, batch: str | None = None) -> None:
    """The servers other than `by`, which acknowledged the write of `receipt`, show it in their
    very next reads (with one server, `by` itself: its workers take turns)."""
    seq = receipt["seq"]
    for url in [url for url in cluster.urls if url != by] or [by]:
        assert ledger_size(cluster, url) > seq
        assert checkpoint_size(cluster, url) > seq
        if batch is not None:
            response = cluster.read(url, f"/v1/batches/{batch}")
            assert response.status_code == 200, response.text
            assert (response.json()["head"], response.json()["last_seq"]) == (
                receipt["envelope_hash"], seq
            )  # fmt: skip


def assert_unknown(cluster: Cluster, batch: str) -> None:
    for url in cluster.urls:
        response = cluster.read(url, f"/v1/batches/{batch}")
        assert response.status_code == 404, response.text


# --- the registry -------------------------------------------------------------------------------


def accepted_on(cluster: Cluster, url: str, event: JSONObject, signers: list[Signer]) -> None:
    """Post an event through `url` that must be accepted; every server must see it at once."""
    answer = cluster.client(url).post_event(sign(event, signers))
    assert answer.status_code == 201, answer.text
    cluster.note("registry", answer)
    assert_seen(cluster, url, answer.json())


def set_up(cluster: Cluster) -> None:
    """The registry, written through the servers in turn; then an authority's read token."""
    first = cluster.pair[0]
    genesis = {"id": "bis", "name": "BIS", "roles": ["authority"], "country": "US",
               "keys": [BIS.public_key_b64]}  # fmt: skip
    accepted_on(cluster, first, make_event("party.registered", "bis", party=genesis), [BIS])
    parties = [("acme-chips", "vendor", VENDOR)]
    parties += [(party, "buyer", key) for party, key in BUYERS.items()]
    for url, (party, role, key) in zip(itertools.cycle(cluster.pair[::-1]), parties, strict=False):
        record = {"id": party, "name": party, "roles": [role], "country": "AE",
                  "keys": [key.public_key_b64]}  # fmt: skip
        accepted_on(cluster, url, make_event("party.registered", "bis", party=record), [BIS, key])
    request = sign(make_event("session.requested", "bis"), [BIS])
    answer = cluster.client(first).post_raw("/v1/sessions", canonical(request))
    assert answer.status_code == 201, answer.text
    cluster.token = answer.json()["token"]  # read on every server: sessions are in the store


# --- racing -------------------------------------------------------------------------------------


def fabrication(batch: str, quantity: int = 8, event_id: str | None = None) -> JSONObject:
    return make_event("batch.fabricated", "acme-chips", event_id=event_id, batch=batch,
                      model="H200", quantity=quantity, country="TW")  # fmt: skip


def export(batch: str, prev: str, to: str) -> JSONObject:
    return make_event("batch.exported", "acme-chips", batch=batch, prev=prev, to=to,
                      destination="AE")  # fmt: skip


def race(cluster: Cluster, name: str, sends: list[tuple[str, str, bytes]]) -> list[httpx.Response]:
    """Post each (url, path, body) from a thread of its own, all released at once."""
    barrier = threading.Barrier(len(sends))

    def send(url: str, path: str, body: bytes) -> httpx.Response:
        client = cluster.client(url)
        barrier.wait(BARRIER_TIMEOUT)
        return client.post_raw(path, body)

    with ThreadPoolExecutor(len(sends)) as pool:
        answers = list(pool.map(lambda item: send(*item), sends))
    for answer in answers:
        cluster.note(name, answer)
    return answers


def one_winner(answers: list[httpx.Response]) -> int:
    """Exactly one answer is a 201 and every other a 409 `conflict`: the winner's index."""
    statuses = [answer.status_code for answer in answers]
    assert sorted(statuses) == [201] + [409] * (len(answers) - 1), [a.text for a in answers]
    assert all(a.json()["error"]["code"] == "conflict" for a in answers if a.status_code == 409)
    return statuses.index(201)


def fabricate(cluster: Cluster, url: str, count: int) -> dict[str, JSONObject]:
    """`count` new batches through `url`, each read back from every server at once. A 409
    (the write lost to other writers three times running) is sent again, as a client would."""
    made: dict[str, JSONObject] = {}
    for _ in range(count):
        batch = cluster.name("b")
        envelope = sign(fabrication(batch), [VENDOR])
        for _attempt in range(RESENDS):
            answer = cluster.client(url).post_event(envelope)
            cluster.note("independent", answer)
            if answer.status_code != 409:
                break
        assert answer.status_code == 201, answer.text
        made[batch] = answer.json()
        assert_seen(cluster, url, made[batch], batch)
    return made


def independent_fabrications(cluster: Cluster, scale: int) -> dict[str, JSONObject]:
    """Four threads, two per server, fabricating at once."""
    urls = [*cluster.pair, *cluster.pair]
    with ThreadPoolExecutor(len(urls)) as pool:
        made = list(pool.map(lambda url: fabricate(cluster, url, scale), urls))
    return {batch: receipt for found in made for batch, receipt in found.items()}


def exports_with_one_prev(cluster: Cluster, made: dict[str, JSONObject], scale: int) -> None:
    """The same batch exported through both servers from the same `prev`: one custody."""
    for batch, receipt in list(made.items())[:scale]:
        envelopes = [sign(export(batch, receipt["envelope_hash"], to), [VENDOR]) for to in BUYERS]
        sends = [
            (url, "/v1/events", canonical(e))
            for url, e in zip(cluster.pair, envelopes, strict=True)
        ]
        answers = race(cluster, "same-prev", sends)
        winner = one_winner(answers)
        assert_seen(cluster, cluster.pair[winner], answers[winner].json(), batch)


def one_id_other_bytes(cluster: Cluster, scale: int) -> None:
    """The same event id with other payload bytes through both servers: one is recorded."""
    for _ in range(scale):
        event_id, batches = str(uuid.uuid4()), [cluster.name("id"), cluster.name("id")]
        envelopes = [sign(fabrication(b, event_id=event_id), [VENDOR]) for b in batches]
        sends = [
            (url, "/v1/events", canonical(e))
            for url, e in zip(cluster.pair, envelopes, strict=True)
        ]
        answers = race(cluster, "same-event-id", sends)
        winner = one_winner(answers)
        assert_seen(cluster, cluster.pair[winner], answers[winner].json(), batches[winner])
        assert_unknown(cluster, batches[1 - winner])


def one_batch_id_twice(cluster: Cluster, scale: int) -> None:
    """The same batch id fabricated through both servers (other ids, other quantities)."""
    for _ in range(scale):
        batch = cluster.name("twin")
        envelopes = [sign(fabrication(batch, quantity), [VENDOR]) for quantity in (4, 5)]
        sends = [
            (url, "/v1/events", canonical(e))
            for url, e in zip(cluster.pair, envelopes, strict=True)
        ]
        answers = race(cluster, "same-batch-id", sends)
        winner = one_winner(answers)
        assert_seen(cluster, cluster.pair[winner], answers[winner].json(), batch)


def overlapping_batch_requests(cluster: Cluster, scale: int) -> None:
    """Two batch requests of four fabrications sharing the batch id at index 2: one is
    recorded whole, the other not at all (409 naming index 2)."""
    for _ in range(scale):
        shared = cluster.name("shared")
        names = [[cluster.name("m") for _ in range(4)] for _ in cluster.pair]
        for own in names:
            own[2] = shared
        bodies = [canonical({"envelopes": [sign(fabrication(b), [VENDOR]) for b in own]})
                  for own in names]  # fmt: skip
        sends = [
            (url, "/v1/events/batch", body) for url, body in zip(cluster.pair, bodies, strict=True)
        ]
        answers = race(cluster, "overlapping-batches", sends)
        winner = one_winner(answers)
        assert answers[1 - winner].json()["error"]["index"] == 2
        for batch, receipt in zip(names[winner], answers[winner].json()["receipts"], strict=True):
            assert_seen(cluster, cluster.pair[winner], receipt, batch)
        for batch in names[1 - winner]:
            if batch != shared:
                assert_unknown(cluster, batch)


# --- the log afterwards -------------------------------------------------------------------------


def log_of(cluster: Cluster, url: str) -> list[JSONObject]:
    """Every entry of the log, read through `url` page by page."""
    entries: list[JSONObject] = []
    for _ in range(100):  # bounded: far more pages than these tests write
        response = cluster.read(url, f"/v1/log/entries?start={len(entries)}&limit=1000")
        assert response.status_code == 200, response.text
        page = response.json()["entries"]
        if not page:
            return entries
        entries += page
    raise AssertionError("the log did not end within 100 pages")


def assert_one_history(cluster: Cluster) -> None:
    """Dense seqs, the same log on every server, exactly the acknowledged envelopes in it,
    one fabrication per batch and no two events of a batch from the same `prev`."""
    logs = [log_of(cluster, url) for url in cluster.urls]
    assert all(log == logs[0] for log in logs)
    size = len(logs[0])
    assert [entry["seq"] for entry in logs[0]] == list(range(size))
    for url in cluster.urls:
        assert ledger_size(cluster, url) == checkpoint_size(cluster, url) == size
    assert {envelope_hash(e["envelope"]): e["seq"] for e in logs[0]} == cluster.accepted
    events = [json.loads(payload_bytes(entry["envelope"])) for entry in logs[0]]
    assert len({event["id"] for event in events}) == size
    custody = [event for event in events if event["type"].startswith("batch.")]
    made = Counter(e["batch"] for e in custody if e["type"] == "batch.fabricated")
    assert set(made.values()) == {1}
    prevs = Counter((e["batch"], e["prev"]) for e in custody if "prev" in e)
    assert set(prevs.values()) <= {1}


def run_races(cluster: Cluster, scale: int) -> None:
    set_up(cluster)
    made = independent_fabrications(cluster, scale)
    exports_with_one_prev(cluster, made, scale)
    one_id_other_bytes(cluster, scale)
    one_batch_id_twice(cluster, scale)
    overlapping_batch_requests(cluster, scale)
    assert {status for _, status in cluster.answers} <= {201, 409}, cluster.answers
    assert_one_history(cluster)
    print(f"answers: {sorted(cluster.answers.items())}; log size {len(cluster.accepted)}")


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", POSTGRES, ids=[layout.name for layout in POSTGRES])
def test_servers_on_one_postgresql_store_race_writes_into_one_dense_log_without_a_5xx(
    layout: Layout, pg_store: str, start: Callable[[str, Layout], Cluster]
) -> None:
    run_races(start(pg_store, layout), layout.scale)


def test_workers_on_one_sqlite_file_race_writes_into_one_dense_log_without_a_5xx(
    tmp_path: Path, start: Callable[[str, Layout], Cluster]
) -> None:
    run_races(start(str(tmp_path / "ledger.db"), SQLITE), SQLITE.scale)


def test_serve_stops_with_exit_1_when_its_workers_cannot_open_the_ledger(tmp_path: Path) -> None:
    """A worker that fails to open the ledger (here its log key file is missing) stops the
    supervisor instead of being started again forever (one worker: the same path, cheaper)."""
    store = str(tmp_path / "ledger.db")
    init_store(tmp_path, store)
    missing = str(tmp_path / "missing.key")
    code = (
        "import sys\nfrom tools.serving import Serving, WorkerFailed, bind, supervise\n"
        f"try: supervise(Serving({store!r}, {missing!r}), bind('127.0.0.1', 0), 1)\n"
        "except WorkerFailed as exc: sys.exit(exc.message)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"no key file at {missing}" in done.stderr
    assert "could not open the ledger" in done.stderr
