"""Group commit on SQLite: one writer thread runs the write jobs of concurrent callers in
one transaction per commit.

Why a batch: SQLite has one writer at a time, and at `synchronous=FULL` each commit waits
for an fsync (~0.2 ms here). Callers that queue while a commit is under way share the next
one instead of paying one each, so throughput grows with concurrency instead of stopping at
one fsync per write. Why a thread: a write first waits for SQLite's write lock, which another
process on the same file (`lava-mcp stdio` beside `lava-mcp serve`) may hold for seconds;
waiting in the writer thread, it never stalls the event loop (`/healthz`, reads, anything
that does not write).

The rules:
- A job is `function(session, *args)`, run in the batch's transaction inside a SAVEPOINT of
  its own. A job that raises (a refused hold) is rolled back alone and its caller gets the
  exception; the other jobs of the batch commit.
- A caller is answered only once its batch's COMMIT has returned, and a job submitted as
  durable (the default) only once that commit is on disk too (see below).
- A batch is one transaction, so a crash mid-batch leaves nothing of it.
- A batch whose BEGIN or COMMIT fails (the lock not granted within the busy timeout, a full
  disk) answers every caller in it with that error; each caller's own rule decides whether
  to submit again (`metering._write` retries "try again" errors).
- A job whose failure aborts the whole transaction (an ORM flush error, an I/O error) is
  answered with its error and the rest of the batch runs again in a new transaction: nothing
  of the batch was committed, and no caller was answered yet.
- A job does its ORM work through the session it is given (flushed after the job; the
  identity map is emptied between jobs so each reads afresh, as in a transaction of its
  own), and never opens another write transaction (`Database.write`): the writer holds the
  process's write lock for the batch.

The writer's session stays open across batches: SQLAlchemy's per-transaction bookkeeping
costs more than SQLite's own commit, so the batches' transactions are begun and committed on
the driver connection underneath it (`BEGIN IMMEDIATE` … `COMMIT`).

`synchronous=FULL` without waiting for the fsync in the writer: at FULL, SQLite's COMMIT
appends the transaction to the WAL file and then fsyncs it, and the writer could do nothing
else meanwhile. Instead the writer's own connection commits at NORMAL (the same WAL append,
the same checkpoint syncs, no fsync per commit) and hands the batch to a sync thread, which
fsyncs the WAL file and only then answers the batch's callers. So each caller is answered
exactly when it would be at FULL — once its transaction is in the WAL on disk — while the
writer already runs the next batch; one fsync covers every batch committed before it began.

A job submitted with `durable=False` is answered as soon as its batch's COMMIT returns,
without waiting for that fsync: it is committed (every connection sees it, and a SIGKILL
of this process loses nothing, since the WAL append is in the kernel's page cache) but a
power loss before the next fsync may take it back. Metering submits holds this way: the
WAL is one append-only file, so the fsync its call's settle waits for makes the hold
durable too, and a hold lost to a power cut belongs to a call whose answer never completed
(the sweep would have released it at $0 anyway). See `Database.submit`.

Checkpoints off the writer's path (for a database on file): SQLite copies the WAL back into the database
file (a checkpoint: thousands of pages and two fsyncs, several milliseconds) inside the
COMMIT that crosses `wal_autocheckpoint` pages, so one batch in a hundred would keep its
callers and every queued job waiting for it. The writer's connection has the automatic
checkpoint off; every so many commits it wakes a checkpoint thread, which runs
a PASSIVE checkpoint on a connection of its own — concurrently with the writer's next
batches, as WAL mode allows (it copies only frames no reader still needs, and never waits
for a lock). Other connections (reads, other processes) keep their automatic checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session

logger = logging.getLogger("lava_mcp.store.writer")

# At most this many jobs share one commit (each caller's wait stays bounded under a flood).
MAX_BATCH_JOBS = 256
# The checkpoint thread runs after CHECKPOINT_COMMITS of the writer's commits at first (a
# commit of one call appends ~12 pages, a batch many more), then after as many as keep the
# WAL near CHECKPOINT_FRAMES pages between checkpoints (SQLite's own default: 1,000).
CHECKPOINT_COMMITS = 128
CHECKPOINT_FRAMES = 1000
MIN_CHECKPOINT_COMMITS, MAX_CHECKPOINT_COMMITS = 4, 1024


@dataclass(slots=True)
class _Job:
    function: Callable[..., Any]
    args: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    durable: bool


# (job, succeeded, its result or its exception)
_Outcome = tuple[_Job, bool, Any]
# (answered only once the WAL is on disk, the outcomes)
_Answers = tuple[bool, list[_Outcome]]


class Writer:
    """The writer thread of one SQLite database (started on the first job)."""

    def __init__(
        self,
        engine: Engine,
        write_lock: threading.Lock,
        *,
        on_file: bool = True,
        sync_wal: bool = False,
        busy_timeout_ms: int = 30_000,
    ) -> None:
        """`on_file`: the database is a file (not `:memory:`): checkpoints run in their own
        thread, and `now_if_idle` jobs may run on the caller's thread.
        `sync_wal`: fsync the WAL after each batch in the sync thread (FULL durability,
        see above); False leaves syncing to SQLite's own `synchronous` setting.
        `busy_timeout_ms`: the connections' busy timeout (restored after a `now_if_idle` try)."""
        self._busy_timeout_ms = busy_timeout_ms
        # Jobs submitted and not yet answered (`now_if_idle` runs a job at once only alone).
        self._unanswered = 0
        self._counting = threading.Lock()
        # The batch's transaction is begun by the writer on the driver, not by SQLAlchemy.
        self._engine = engine.execution_options(lava_begin="")
        self._on_file = on_file
        self._sync_wal = sync_wal and on_file
        self._wal: Path | None = None  # the WAL file, as SQLite names it (set with the session)
        self._synced: queue.SimpleQueue[list[_Outcome] | None] = queue.SimpleQueue()
        self._syncer: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._checkpoint_due = threading.Event()
        self._checkpoint_stop = False
        self._checkpointed_at = 0  # self.commits when the checkpoint thread was last woken
        self.checkpoint_every = CHECKPOINT_COMMITS  # commits between checkpoints (adapted)
        self.checkpoints = 0  # PASSIVE checkpoints run by the checkpoint thread (tests)
        self._write_lock = write_lock
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()
        self._session: Session | None = None
        self._driver: Any = None
        # Figures (bench, tests): batches committed, and the jobs they committed.
        self.commits = 0
        self.committed_jobs = 0

    def queued(self) -> int:
        """Jobs waiting for a batch (not yet taken by the writer)."""
        return self._jobs.qsize()

    def submit(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        *,
        durable: bool = True,
        now_if_idle: bool = False,
    ) -> asyncio.Future[Any]:
        """Queue `function(session, *args)` for the next batch; the future resolves after its
        COMMIT, and for a `durable` job once that commit is on disk (at FULL: the fsync).

        `now_if_idle`: when no other job is in flight (submitted and not yet answered: it
        would share their next commit instead), the writer is idle (the write lock free) and
        no other connection holds SQLite's write lock at this instant, run the job at once on
        the calling thread, in a transaction of its own, instead of waking the writer (the
        fsync still runs in the sync thread). For short jobs that never block: a lone call
        then pays no thread hand-off, and the event loop never waits on a lock."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if self._thread is None:
            self._start()
        job = _Job(function, args, loop, future, durable)
        with self._counting:
            alone = self._unanswered == 0
            self._unanswered += 1
        # (With other jobs in flight, this one waits to share their next commit.)
        if not (now_if_idle and alone and self._on_file and self._jobs.empty() and self._run_now(job)):
            self._jobs.put(job)
        return future

    def _run_now(self, job: _Job) -> bool:
        """Run `job` at once on this thread if neither this process nor another holds the
        write lock this instant; False (nothing done) otherwise, for the writer to run it."""
        if not self._write_lock.acquire(blocking=False):
            return False
        answers: list[_Answers] = []
        try:
            if self._session is None:  # opening one may wait for a pooled connection
                return False
            return self._commit_locked([job], answers, wait=False) is not None
        except BaseException as error:  # nothing of it committed; the session goes
            self._discard_session()
            answers = [(False, [(job, False, error)])]
            if not isinstance(error, Exception):
                raise
            return True
        finally:
            self._write_lock.release()
            self._deliver(answers)

    def stop(self) -> None:
        """Finish the jobs already queued, then stop the threads (a later job starts them again)."""
        with self._starting:  # (no new threads meanwhile: each sentinel reaches its own thread)
            thread, self._thread = self._thread, None
            syncer, self._syncer = self._syncer, None
            checkpointer, self._checkpointer = self._checkpointer, None
            if thread is None:
                return
            self._jobs.put(None)
            thread.join()
            if syncer is not None:
                self._synced.put(None)
                syncer.join()
            if checkpointer is not None:
                self._checkpoint_stop = True
                self._checkpoint_due.set()
                checkpointer.join()
                self._checkpoint_stop = False

    def _start(self) -> None:
        with self._starting:
            if self._thread is None:
                if self._sync_wal:
                    syncer = threading.Thread(target=self._sync, name="lava-sqlite-sync", daemon=True)
                    syncer.start()
                    self._syncer = syncer
                if self._on_file:
                    checkpointer = threading.Thread(
                        target=self._checkpoint, name="lava-sqlite-checkpoint", daemon=True
                    )
                    checkpointer.start()
                    self._checkpointer = checkpointer
                thread = threading.Thread(target=self._serve, name="lava-sqlite-writer", daemon=True)
                thread.start()
                self._thread = thread

    def _sync(self) -> None:
        """Fsync the WAL for every batch committed so far, then answer those batches."""
        while True:
            first = self._synced.get()
            if first is None:
                return
            batches, stopping = [first], False
            while True:
                try:
                    more = self._synced.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                batches.append(more)
            wal = self._wal
            assert wal is not None  # set before the first batch was handed over
            try:
                _fsync(wal)
            except OSError as error:  # not durable: no caller may be told it is
                logger.exception("could not fsync %s", wal)
                for outcomes in batches:
                    self._answer([(job, False, error) for job, _, _ in outcomes])
            else:
                for outcomes in batches:
                    self._answer(outcomes)
            if stopping:
                return

    def _checkpoint(self) -> None:
        """Run a PASSIVE checkpoint each time the writer says one is due (see above)."""
        connection: sqlite3.Connection | None = None
        try:
            while True:
                self._checkpoint_due.wait()
                self._checkpoint_due.clear()
                if self._checkpoint_stop:
                    return
                wal = self._wal
                if wal is None:
                    continue
                try:
                    if connection is None:
                        main_file = str(wal)[: -len("-wal")]
                        connection = sqlite3.connect(main_file, isolation_level=None, check_same_thread=False)
                    _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.checkpoints += 1
                    # Commits count, not pages: keep the WAL near CHECKPOINT_FRAMES pages
                    # between checkpoints whatever the batches' sizes.
                    if frames > 2 * CHECKPOINT_FRAMES:
                        self.checkpoint_every = max(MIN_CHECKPOINT_COMMITS, self.checkpoint_every // 2)
                    elif frames < CHECKPOINT_FRAMES // 2:
                        self.checkpoint_every = min(MAX_CHECKPOINT_COMMITS, self.checkpoint_every * 2)
                except Exception:  # the next one tries again; SQLite's WAL stays correct
                    logger.exception("could not checkpoint %s", wal)
                    if connection is not None:
                        connection.close()
                    connection = None
        finally:
            if connection is not None:
                connection.close()

    def _serve(self) -> None:
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                batch = [job]
                stopping = False
                while len(batch) < MAX_BATCH_JOBS:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                        break
                    batch.append(more)
                try:
                    self._commit(batch)
                except BaseException as error:  # never leave a caller waiting on a dead thread
                    logger.exception("the SQLite writer failed a batch of %d jobs", len(batch))
                    with self._write_lock:  # (the loop's thread may use the session too)
                        self._discard_session()
                    self._answer([(job, False, error) for job in batch])
                if stopping:
                    return
        finally:
            with self._write_lock:
                self._discard_session()

    def _commit(self, batch: list[_Job]) -> None:
        jobs = batch
        while jobs:
            answers: list[_Answers] = []
            try:
                with self._write_lock:
                    left = self._commit_locked(jobs, answers, wait=True)
            finally:
                self._deliver(answers)  # once the lock is free (a caller may write at once)
            jobs = left or []

    def _commit_locked(self, jobs: list[_Job], answers: list[_Answers], *, wait: bool) -> list[_Job] | None:
        """Run `jobs` in one transaction (the caller holds the write lock) and add what to
        answer to `answers`, for the caller to `_deliver` once it has let go of the lock.
        Returns the jobs to run again in a new transaction (one job aborted this one) or [];
        without `wait`, None when another connection holds SQLite's write lock (nothing was
        done)."""
        session, driver = self._open_session()
        cursor = driver.cursor()
        if not wait:
            # Take SQLite's lock only if it is free this instant: never wait on this thread.
            cursor.execute("PRAGMA busy_timeout=0")
            try:
                cursor.execute("BEGIN IMMEDIATE")
                began = True
            except sqlite3.Error:
                began = False
            # (A restore that fails raises: the caller discards the session.)
            cursor.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
            if not began:
                return None  # the writer tries again, waiting for the lock
        else:
            try:
                cursor.execute("BEGIN IMMEDIATE")
            except Exception as error:  # the lock was not granted: every caller decides
                self._discard_session()  # (a fresh one next time, whatever went wrong)
                answers.append((False, [(job, False, error) for job in jobs]))
                return []
        outcomes, aborted = self._run_jobs(session, driver, cursor, jobs)
        if aborted is not None:
            # The transaction is gone, nothing of it committed and nobody answered:
            # answer the job that broke it and run the others again.
            self._discard_session()
            answers.append((False, [aborted]))
            return [job for job in jobs if job is not aborted[0]]
        try:
            cursor.execute("COMMIT")
        except Exception as error:
            self._discard_session()
            answers.append((False, [(job, False, error) for job in jobs]))
            return []
        self.commits += 1
        self.committed_jobs += len(jobs)
        if self._on_file and self.commits - self._checkpointed_at >= self.checkpoint_every:
            self._checkpointed_at = self.commits
            self._checkpoint_due.set()
        if not self._sync_wal:
            answers.append((False, outcomes))
            return []
        # Committed is all a job not `durable` asked for; the others wait for the fsync.
        answers.append((False, [outcome for outcome in outcomes if not outcome[0].durable]))
        answers.append((True, [outcome for outcome in outcomes if outcome[0].durable]))
        return []

    def _deliver(self, answers: list[_Answers]) -> None:
        for after_fsync, outcomes in answers:
            if not outcomes:
                continue
            if after_fsync:
                self._synced.put(outcomes)  # answered once the WAL is on disk
            else:
                self._answer(outcomes)

    def _run_jobs(
        self, session: Session, driver: Any, cursor: Any, jobs: list[_Job]
    ) -> tuple[list[_Outcome], _Outcome | None]:
        """Run each job in its own savepoint; returns the outcomes, or the job that aborted
        the whole transaction."""
        outcomes: list[_Outcome] = []
        for job in jobs:
            cursor.execute("SAVEPOINT lava_job")
            # ORM state lives in the session (pending rows, the identity map): flushed
            # with the job and then forgotten. The hot path's jobs leave none (`store.fast`).
            try:
                result = job.function(session, *job.args)
                if session.new or session.identity_map:
                    session.flush()
            except Exception as error:
                if not session.is_active or not driver.in_transaction:
                    return outcomes, (job, False, error)
                cursor.execute("ROLLBACK TO lava_job")
                outcomes.append((job, False, error))
            else:
                outcomes.append((job, True, result))
            cursor.execute("RELEASE lava_job")
            if session.new or session.identity_map:
                session.expunge_all()
        return outcomes, None

    def _answer(self, outcomes: list[_Outcome]) -> None:
        """Resolve each caller's future on its own event loop (one wake-up per loop; on the
        loop this thread runs, at its next turn: a caller whose jobs all run at once still
        lets the loop's other tasks run between them)."""
        with self._counting:
            self._unanswered -= len(outcomes)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
        for outcome in outcomes:
            by_loop.setdefault(outcome[0].loop, []).append(outcome)
        here = asyncio._get_running_loop()  # (None off an event loop; CPython's and uvloop's)
        for loop, answers in by_loop.items():
            if loop is here:
                loop.call_soon(_resolve, answers)
                continue
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits for these
                loop.call_soon_threadsafe(_resolve, answers)

    def _open_session(self) -> tuple[Session, Any]:
        if self._session is None:
            session = Session(self._engine, expire_on_commit=False)
            session.begin()
            # SQLAlchemy's transaction stays open (it emits nothing: `lava_begin` is empty);
            # each batch's real transaction is begun and committed on the driver.
            self._driver = session.connection().connection.driver_connection
            if self._sync_wal:
                self._driver.execute("PRAGMA synchronous=NORMAL")  # the sync thread fsyncs
            if self._on_file:
                self._driver.execute("PRAGMA wal_autocheckpoint=0")  # the checkpoint thread does
                # The file SQLite opened (an absolute path, whatever the working directory).
                main_file = self._driver.execute("PRAGMA database_list").fetchone()[2]
                self._wal = Path(f"{main_file}-wal")
            self._session = session
        return self._session, self._driver

    def _discard_session(self) -> None:
        session, driver = self._session, self._driver
        self._session = self._driver = None
        if session is None:
            return
        try:
            if self._on_file:
                # The pooled connection goes back to its settings, or is not reused at all.
                try:
                    driver.rollback()  # whatever is left of a batch
                    if self._sync_wal:
                        driver.execute("PRAGMA synchronous=FULL")
                    driver.execute("PRAGMA wal_autocheckpoint=1000")
                    driver.execute(f"PRAGMA busy_timeout={self._busy_timeout_ms}")
                except Exception:
                    session.connection().invalidate()
            session.close()  # rolls back whatever is left on the driver
        except Exception:
            logger.exception("could not close the SQLite writer's session")


def _fsync(wal: Path) -> None:
    """Flush the WAL file to disk (opened by name each time: a WAL that was checkpointed and
    removed meanwhile, when the last connection closed, has nothing left to flush)."""
    try:
        descriptor = os.open(wal, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _resolve(outcomes: list[_Outcome]) -> None:
    for job, succeeded, value in outcomes:
        if job.future.done():  # its caller stopped waiting (cancelled)
            continue
        if succeeded:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


async def wait_out(future: asyncio.Future[Any]) -> None:
    """Wait until `future` is done, whatever cancellations arrive meanwhile (the caller
    re-raises the first one): work handed to the database can't be taken back."""
    while not future.done():
        try:
            await asyncio.wait({future})
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
