"""Identifiers and secrets.

Ids are `prefix_` + 12 hex digits of milliseconds since the epoch + 16 random hex
digits, so they sort by creation time (the request list pages on them).
Secrets (wallet and spend keys) are 32 random bytes in base62, stored only as SHA-256.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

WALLET_KEY_PREFIX = "lava_wk_"
SPEND_KEY_PREFIX = "lava_sk_"


def new_id(prefix: str) -> str:
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def new_secret(prefix: str) -> str:
    """A fresh secret: `prefix` + base62 of 32 random bytes (43 characters)."""
    number = int.from_bytes(secrets.token_bytes(32), "big")
    digits = []
    for _ in range(43):
        number, remainder = divmod(number, 62)
        digits.append(_BASE62[remainder])
    return prefix + "".join(digits)


def hash_secret(secret: str) -> str:
    """SHA-256 is enough for 256-bit random secrets (no dictionary to attack)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def preview(secret: str) -> str:
    """`lava_sk_a1b2c3d4****`: enough to recognise a key, useless to anyone else."""
    prefix_length = secret.find("_", 5) + 1 if secret.startswith("lava_") else 0
    return secret[: prefix_length + 8] + "****"
