"""The gateway's spend keys by secret hash, so that a call costs no read of its key.

The rule: a cached key is only ever used to judge a call *before* its hold, and the hold
(`spend_keys.reserve`, one conditional UPDATE) takes effect only if the key row still has
the cached `version` and `key_hash` and is active. Every rotate, update (pause and resume
included) and revoke bumps `version`, on whichever process or machine it ran, so a key
changed anywhere is refused, or judged again by its current row, on the very next call:
the cache can make a call cheaper, never let a changed key through. When the hold finds
the key moved, `reserve` puts the row it read in place of the stale entry (or drops it),
so the calls after that are judged by the current key without a read.

A cached key may refuse only what the hold can't correct, so: only active keys are cached
(a paused key is read each call, so a resume counts at once); a call the cached key would
refuse (`check_allowed`) is judged again by a fresh read (the gateway does it); and an
entry is read again once it is `max_age_s` old, which bounds how long a rate limit raised
elsewhere can still refuse by its old value (one read per key per `max_age_s`).

Bounds: at most `max_keys` keys (the oldest is dropped first) and at most `max_unknown`
secrets known not to exist, each for `unknown_ttl_s` only (a flood of made-up secrets
costs one read each per `unknown_ttl_s`, and can't push real keys out).

Entries are keyed by the database URL and the SHA-256 of the secret (never the secret),
so two ledgers served by one process never share a key. The cached objects are detached
copies that nobody writes to; the lock keeps the dictionaries consistent when PostgreSQL
work runs in worker threads.
"""

from __future__ import annotations

import threading
import time

from lava_mcp.store.models import SpendKey

MAX_KEYS = 10_000
MAX_UNKNOWN = 4_096
UNKNOWN_TTL_S = 2.0
MAX_AGE_S = 1.0

_COLUMNS = tuple(SpendKey.__table__.columns.keys())  # type: ignore[attr-defined]
Entry = tuple[str, str]  # (database URL, SHA-256 of the secret)


def detached_copy(key: SpendKey) -> SpendKey:
    """A copy of `key`'s columns in a new object that belongs to no session (a rollback of
    the session `key` came from can't expire it under the callers sharing it)."""
    return SpendKey(**{name: getattr(key, name) for name in _COLUMNS})


class KeyCache:
    def __init__(
        self,
        *,
        max_keys: int = MAX_KEYS,
        max_unknown: int = MAX_UNKNOWN,
        unknown_ttl_s: float = UNKNOWN_TTL_S,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self.max_keys = max_keys
        self.max_unknown = max_unknown
        self.unknown_ttl_s = unknown_ttl_s
        self.max_age_s = max_age_s
        self._keys: dict[Entry, tuple[SpendKey, float]] = {}  # → (key, monotonic time read)
        self._unknown: dict[Entry, float] = {}  # → monotonic time it stops counting
        self._entries: dict[int, Entry] = {}  # id of a cached object → its entry
        self._lock = threading.Lock()

    def key(self, database_url: str, digest: str) -> SpendKey | None:
        """The cached key for this secret hash, if any and read less than `max_age_s` ago."""
        found = self._keys.get((database_url, digest))
        if found is None or time.monotonic() - found[1] > self.max_age_s:
            return None
        return found[0]

    def is_unknown(self, database_url: str, digest: str) -> bool:
        """Was this secret hash found to match no key less than `unknown_ttl_s` ago?"""
        until = self._unknown.get((database_url, digest))
        if until is None:
            return False
        if time.monotonic() < until:
            return True
        with self._lock:
            self._unknown.pop((database_url, digest), None)
        return False

    def remember(self, database_url: str, digest: str, key: SpendKey | None) -> None:
        """Record what a read of the database found for this hash (None: no key). A key
        that isn't active is not kept."""
        entry = (database_url, digest)
        with self._lock:
            self._unknown.pop(entry, None)
            self._drop(entry)
            if key is None:
                while len(self._unknown) >= self.max_unknown:
                    del self._unknown[next(iter(self._unknown))]
                self._unknown[entry] = time.monotonic() + self.unknown_ttl_s
            elif key.status == "active":
                self._put(entry, key)

    def replace(self, stale: SpendKey, current: SpendKey | None) -> None:
        """The hold found `stale` (a cached object) changed: put a copy of `current` (the
        row as read in the hold's transaction) in its place if it is still active with the
        same secret, else drop it. Only the entry that holds this very object is touched:
        a key read by anything else (a test, another ledger) is never taken for a cached one."""
        with self._lock:
            entry = self._entries.get(id(stale))
            if entry is None or self._keys.get(entry, (None,))[0] is not stale:
                return
            self._drop(entry)
            if current is not None and current.key_hash == stale.key_hash and current.status == "active":
                self._put(entry, detached_copy(current))

    def forget(self, database_url: str, digest: str) -> None:
        with self._lock:
            self._drop((database_url, digest))

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()
            self._unknown.clear()
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._keys)

    def _put(self, entry: Entry, key: SpendKey) -> None:
        while len(self._keys) >= self.max_keys:
            self._drop(next(iter(self._keys)))
        self._keys[entry] = (key, time.monotonic())
        self._entries[id(key)] = entry

    def _drop(self, entry: Entry) -> None:
        found = self._keys.pop(entry, None)
        if found is not None:
            self._entries.pop(id(found[0]), None)


# One per process: entries name their database, so every Runtime can share it.
keys = KeyCache()
