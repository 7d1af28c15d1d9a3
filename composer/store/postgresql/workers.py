"""The workers of one dispatch on the PostgreSQL server (tables ``dispatch_workers`` and
``dispatch_batches``), and this process's place among them.

Several processes, on any machines, send one dispatch together. Each is a row of
``dispatch_workers`` with its host, pid, state, counts and heartbeat, all moments by
the server's clock (so the machines' clocks never matter). A worker claims the
recipients still to send a batch at a time: a range of subscriber ids, a row of
``dispatch_batches`` naming it. A new range starts after the last one cut, under an
advisory lock (the frontier is one value, so cutting it takes turns: one indexed read
of a batch); a range left by a worker that is gone is taken over first, with
``FOR UPDATE SKIP LOCKED``, so that claimers never wait on each other for it.

A worker is gone when its session ended (it holds a session advisory lock on its
heartbeat's own connection, which the server drops the moment the process dies) or
when its heartbeat is older than its lease (a machine cut off or frozen). Whoever
notices marks it gone; its unfinished ranges are then claimable, and who takes one
over re-reads it by the usual rules (:func:`~composer.store.deliveries.still_to_send`):
what it recorded sent is skipped, what it left in flight is sent again. A worker whose
heartbeat finds itself marked gone, or that could not renew its lease in time, knows
its claims may be another's now (:class:`~composer.store.deliveries.Lease`).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any, cast

import psycopg

from composer.errors import DispatchLocked
from composer.model import Tier
from composer.store import Segment
from composer.store.deliveries import (
    HEARTBEAT_SECONDS,
    DispatchWorker,
    Lease,
    Recipient,
    State,
    WorkerState,
)
from composer.store.postgresql.database import Connection, connect

# The server's clock, in seconds: every moment of a worker is read from it.
_NOW = "extract(epoch FROM clock_timestamp())"
# Advisory lock classes ("nw", "nc"): the one each worker holds while it lives, keyed by
# its id; the one claimers take turns under to cut the next range of a dispatch.
_WORKER_LOCK = 0x6E77
_FRONTIER_LOCK = 0x6E63
# Marks gone every worker still "sending" whose session ended or whose lease ran out.
_MARK_GONE = f"""
UPDATE dispatch_workers SET state = 'gone'
WHERE issue = %s AND state = 'sending' AND worker <> %s
  AND (heartbeat_at + lease_seconds < {_NOW}
       OR pg_try_advisory_xact_lock({_WORKER_LOCK}, hashtext(worker)))
"""
# Each subscriber's delivery is looked up by its key, one index probe per row read in id
# order until the batch is full (the LIMIT keeps the lookup a nested loop): a join
# would hash every delivery of the issue for each claim, a cost growing with the
# dispatch (over a second per claim at 900,000 deliveries).
_RECIPIENTS = (
    "SELECT s.id, s.email, s.key, s.name, s.tier FROM subscribers AS s"
    " LEFT JOIN LATERAL (SELECT x.state, x.retryable FROM deliveries AS x"
    " WHERE x.issue = %s AND x.subscriber_id = s.id LIMIT 1) AS d ON true WHERE {where}"
)


class DispatchWorkers:
    """This process's place among the workers of the dispatch keyed ``key`` on the
    server at ``url``: joining, claiming, the heartbeat (a thread on a connection of its
    own) and leaving. Statements other than the heartbeat's run on the connection the
    caller passes, inside its transaction where one is needed."""

    def __init__(self, url: str, password_env: str, key: str) -> None:
        self.url = url
        self.password_env = password_env
        self.key = key
        self.id = uuid.uuid4().hex
        self.joined = False
        self.lease_seconds = 30.0
        self._ever_joined = False
        self._lease = Lease()
        self._renewed = 0.0  # time.monotonic() of the last heartbeat the server took
        self._beat: Connection | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- joining and leaving ------------------------------------------------------------

    def start_heartbeat(self, lease_seconds: float) -> None:
        """Open the heartbeat's connection and hold this worker's advisory lock on it,
        before the worker is recorded: from then on, its end is the worker's end."""
        self.lease_seconds = lease_seconds
        beat = connect(self.url, self.password_env, application="newsletter worker")
        beat.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (_WORKER_LOCK, self.id))
        self._beat = beat

    def join(self, db: Connection, segment: Segment, name: str) -> None:
        """Inside the caller's transaction: mark the workers that are gone, start a new
        run when none is left sending (forgetting the last run's workers and ranges) and
        this process never took part, refuse to join live workers sending another
        segment, then record this worker as sending."""
        db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_FRONTIER_LOCK, self.key))
        db.execute(_MARK_GONE, (self.key, self.id))
        live = db.execute(
            "SELECT host, pid FROM dispatch_workers WHERE issue = %s AND state = 'sending'"
            " AND worker <> %s ORDER BY started_at",
            (self.key, self.id),
        ).fetchall()
        if live:
            row = db.execute(
                "SELECT segment FROM dispatches WHERE issue = %s", (self.key,)
            ).fetchone()
            if row and row[0] != segment:
                names = ", ".join(f"process {pid} on {host}" for host, pid in live)
                raise DispatchLocked(
                    f"{name} is being sent to {row[0]} by {names}; join it with"
                    f" --segment {row[0]}, or wait for it to finish"
                )
        elif not self._ever_joined:
            db.execute("DELETE FROM dispatch_batches WHERE issue = %s", (self.key,))
            db.execute("DELETE FROM dispatch_workers WHERE issue = %s", (self.key,))
        db.execute(
            "INSERT INTO dispatch_workers (issue, worker, host, pid, state, lease_seconds,"
            f" started_at, heartbeat_at) VALUES (%s, %s, %s, %s, 'sending', %s, {_NOW}, {_NOW})"
            " ON CONFLICT (issue, worker) DO UPDATE SET state = 'sending',"
            " lease_seconds = excluded.lease_seconds, heartbeat_at = excluded.heartbeat_at",
            (self.key, self.id, socket.gethostname(), os.getpid(), self.lease_seconds),
        )

    def joined_now(self) -> None:
        """The join is committed: heartbeats from now on."""
        self.joined = self._ever_joined = True
        self._lease = Lease()
        self._renewed = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="lease", daemon=True)
        self._thread.start()

    def leave(self, db: Connection, *, finished: bool) -> None:
        """Inside the caller's transaction: record this worker done, its ranges finished
        with it (every recipient it claimed is settled), or stopped, leaving what it did
        not settle to the others."""
        if finished:
            db.execute(
                "UPDATE dispatch_batches SET done = true WHERE issue = %s AND worker = %s"
                " AND NOT done",
                (self.key, self.id),
            )
        db.execute(
            "UPDATE dispatch_workers SET state = %s WHERE issue = %s AND worker = %s"
            " AND state = 'sending'",
            ("done" if finished else "stopped", self.key, self.id),
        )

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat and close its connection, which ends the advisory lock."""
        self.joined = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._beat is not None:
            self._beat.close()
            self._beat = None

    # -- the lease ----------------------------------------------------------------------

    def _heartbeat(self) -> None:
        beat = self._beat
        assert beat is not None
        every = min(HEARTBEAT_SECONDS, self.lease_seconds / 3)
        while not self._stop.wait(every):
            try:
                row = beat.execute(
                    f"UPDATE dispatch_workers SET heartbeat_at = {_NOW} WHERE issue = %s"
                    " AND worker = %s AND state = 'sending' RETURNING (SELECT count(*) FROM"
                    " dispatch_workers WHERE issue = %s AND state = 'sending')",
                    (self.key, self.id, self.key),
                ).fetchone()
            except psycopg.Error:
                continue  # the server is away: lease() judges by the time since the last
            if row is None:
                self._lease = Lease(
                    workers=self._lease.workers,
                    lost=(
                        "another worker took over this one's recipients: its heartbeat did"
                        f" not reach the server for over {self.lease_seconds:g} s"
                    ),
                )
                return
            self._lease = Lease(workers=max(1, int(row[0])))
            self._renewed = time.monotonic()

    def lease(self) -> Lease:
        """This worker's standing as last heard; lost, too, once longer than the lease
        has passed since the server last took its heartbeat (a frozen or cut-off
        process cannot know whether another took its recipients meanwhile)."""
        lease = self._lease
        if self.joined and not lease.lost:
            silent = time.monotonic() - self._renewed
            if silent > self.lease_seconds:
                return Lease(
                    workers=lease.workers,
                    lost=(
                        f"no heartbeat reached the server for {silent:.0f} s, over the"
                        f" lease of {self.lease_seconds:g} s: another worker may have taken"
                        " over this one's recipients"
                    ),
                )
        return lease

    # -- claiming -----------------------------------------------------------------------

    def claim(
        self, db: Connection, where: str, params: tuple[str, ...], batch: int
    ) -> list[Recipient]:
        """Up to ``batch`` recipients for this worker, ``where`` (on ``s`` and ``d``)
        keeping those still to send: a range left by a worker that is gone, else the
        next range after the last one cut. Empty: nothing left to claim now."""
        with db.transaction():
            # The planner prices the lookups per row high and would compile the query
            # (JIT) for ten times what running it costs.
            db.execute("SET LOCAL jit = off")
            db.execute(_MARK_GONE, (self.key, self.id))
            while taken := db.execute(
                "SELECT b.first_id, b.last_id FROM dispatch_batches AS b"
                " JOIN dispatch_workers AS w ON w.issue = b.issue AND w.worker = b.worker"
                " WHERE b.issue = %s AND NOT b.done AND w.state <> 'sending'"
                " ORDER BY b.first_id LIMIT 1 FOR UPDATE OF b SKIP LOCKED",
                (self.key,),
            ).fetchone():
                first, last = taken
                rows = db.execute(
                    _RECIPIENTS.format(where=where) + " AND s.id BETWEEN %s AND %s ORDER BY s.id",
                    (self.key, *params, first, last),
                ).fetchall()
                db.execute(
                    "UPDATE dispatch_batches SET worker = %s, done = %s"
                    " WHERE issue = %s AND first_id = %s",
                    (self.id, not rows, self.key, first),
                )
                if rows:
                    return self._claimed(db, rows)
            db.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_FRONTIER_LOCK, self.key))
            row = db.execute(
                "SELECT last_id FROM dispatch_batches WHERE issue = %s"
                " ORDER BY first_id DESC LIMIT 1",
                (self.key,),
            ).fetchone()
            after = int(row[0]) if row else 0
            rows = db.execute(
                _RECIPIENTS.format(where=where) + " AND s.id > %s ORDER BY s.id LIMIT %s",
                (self.key, *params, after, batch),
            ).fetchall()
            if not rows:
                return []
            db.execute(
                "INSERT INTO dispatch_batches (issue, first_id, last_id, worker)"
                " VALUES (%s, %s, %s, %s)",
                (self.key, after + 1, rows[-1][0], self.id),
            )
            return self._claimed(db, rows)

    def _claimed(self, db: Connection, rows: list[tuple[Any, ...]]) -> list[Recipient]:
        db.execute(
            "UPDATE dispatch_workers SET claimed = claimed + %s WHERE issue = %s AND worker = %s",
            (len(rows), self.key, self.id),
        )
        return [
            Recipient(email=email, tier=cast(Tier, tier), name=name, key=key, subscriber_id=sid)
            for sid, email, key, name, tier in rows
        ]

    # -- what the others see ------------------------------------------------------------

    def counted(self, states: Iterable[State]) -> tuple[str, tuple[object, ...]] | None:
        """The statement adding the final outcomes among ``states`` to this worker's
        counts, for the journal's group commit (None: nothing to add)."""
        states = list(states)
        sent, failed, unknown = (states.count(s) for s in ("sent", "failed", "unknown"))
        if not (self.joined and (sent or failed or unknown)):
            return None
        return (
            "UPDATE dispatch_workers SET sent = sent + %s, failed = failed + %s,"
            " unknown = unknown + %s WHERE issue = %s AND worker = %s",
            (sent, failed, unknown, self.key, self.id),
        )

    def listed(self, db: Connection) -> list[DispatchWorker]:
        """Every worker of the dispatch's latest run, first started first; one still
        recorded sending whose session ended or lease ran out is shown gone."""
        with db.transaction():
            rows = db.execute(
                "SELECT w.host, w.pid, w.state, w.claimed, w.sent, w.failed, w.unknown,"
                " (SELECT count(*) FROM dispatch_batches AS b WHERE b.issue = w.issue"
                " AND b.worker = w.worker AND NOT b.done),"
                " to_timestamp(w.started_at), to_timestamp(w.heartbeat_at),"
                f" w.state = 'sending' AND w.heartbeat_at + w.lease_seconds >= {_NOW}"
                f" AND NOT pg_try_advisory_xact_lock({_WORKER_LOCK}, hashtext(w.worker))"
                " FROM dispatch_workers AS w WHERE w.issue = %s ORDER BY w.started_at, w.worker",
                (self.key,),
            ).fetchall()
        workers = []
        for (
            host,
            pid,
            state,
            claimed,
            sent,
            failed,
            unknown,
            unfinished,
            began,
            beat,
            alive,
        ) in rows:
            shown = "gone" if state == "sending" and not alive else state
            workers.append(
                DispatchWorker(
                    host=host,
                    pid=pid,
                    state=cast(WorkerState, shown),
                    alive=bool(alive),
                    claimed=claimed,
                    sent=sent,
                    failed=failed,
                    unknown=unknown,
                    unfinished=unfinished,
                    started_at=cast(dt.datetime, began),
                    heartbeat_at=cast(dt.datetime, beat),
                )
            )
        return workers
