"""Settings from the environment (and a `.env` file), one object for the whole process."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# How long an upstream connection may take to open (the hold's lifetime covers it).
UPSTREAM_CONNECT_TIMEOUT_S = 10.0


def default_database_url() -> str:
    data_dir = Path(platformdirs.user_data_dir("lava-mcp", appauthor=False))
    return f"sqlite:///{data_dir / 'lava.db'}"


class Settings(BaseSettings):
    """Every variable is listed, with its default, in `.env.example`."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    database_url: str = Field(default_factory=default_database_url, alias="LAVA_DATABASE_URL")
    wallet_key: str | None = Field(default=None, alias="LAVA_WALLET_KEY")
    host: str = Field(default="127.0.0.1", alias="LAVA_HOST")
    port: int = Field(default=8787, alias="LAVA_PORT")
    public_url: str | None = Field(default=None, alias="LAVA_PUBLIC_URL")
    # May the OAuth sign-in page create wallets? Unset: yes for the embedded single-user
    # install (no LAVA_PUBLIC_URL), no for a public server.
    open_signup: bool | None = Field(default=None, alias="LAVA_OPEN_SIGNUP")
    # `lava-mcp stdio` as a thin client of this lava-mcp server (its /mcp, with the wallet
    # key) instead of opening a database: links, webhooks and balances are that server's.
    server_url: str | None = Field(default=None, alias="LAVA_SERVER_URL")

    payments: Literal["auto", "stripe", "sandbox"] = Field(default="auto", alias="LAVA_PAYMENTS")
    stripe_secret_key: str | None = Field(default=None, alias="STRIPE_SECRET_KEY")
    stripe_webhook_secret: str | None = Field(default=None, alias="STRIPE_WEBHOOK_SECRET")
    stripe_api_base: str | None = Field(default=None, alias="STRIPE_API_BASE")

    openai_api_key: str | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_base_url: str = Field(default="https://api.openai.com/v1", alias="OPENAI_BASE_URL")
    anthropic_api_key: str | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str = Field(default="https://api.anthropic.com", alias="ANTHROPIC_BASE_URL")
    ollama_base_url: str = Field(default="http://127.0.0.1:11434/v1", alias="OLLAMA_BASE_URL")
    catalog_path: Path | None = Field(default=None, alias="LAVA_CATALOG")
    upstream_timeout_s: float = Field(default=120.0, alias="LAVA_UPSTREAM_TIMEOUT_S")
    # A request body must arrive whole within this long (a slow client gets 408).
    body_timeout_s: float = Field(default=30.0, alias="LAVA_BODY_TIMEOUT_S", gt=0)
    # A request body over this many bytes is refused with 413, before more of it is read.
    max_body_bytes: int = Field(default=1_000_000, alias="LAVA_MAX_BODY_BYTES", gt=0)
    # The request line and headers, as sent, over this many bytes (or over this many
    # header lines) are refused with 431 before any route runs. Below uvicorn's own parser
    # limit (h11: 16 KiB of unfinished head, a bare 400; httptools: none at all).
    max_header_bytes: int = Field(default=8192, alias="LAVA_MAX_HEADER_BYTES", gt=0, le=16384)
    max_header_count: int = Field(default=100, alias="LAVA_MAX_HEADER_COUNT", gt=0)
    # A request's line and headers must arrive whole within this long (408, then closed);
    # a connection that sends nothing is closed after it too.
    header_timeout_s: float = Field(default=20.0, alias="LAVA_HEADER_TIMEOUT_S", gt=0)
    # An idle keep-alive connection is closed after this long (uvicorn's timeout_keep_alive).
    keep_alive_timeout_s: int = Field(default=5, alias="LAVA_KEEP_ALIVE_TIMEOUT_S", ge=1)
    # A stream whose client left is read for up to this long more, for its usage.
    stream_drain_s: float = Field(default=5.0, alias="LAVA_STREAM_DRAIN_S", ge=0)
    # Each call to the payment processor gives up after this long (nothing else waits on it).
    stripe_timeout_s: float = Field(default=10.0, alias="LAVA_STRIPE_TIMEOUT_S", gt=0)
    # How often pending card payments whose answer was lost are asked about again.
    reconcile_interval_s: float = Field(default=60.0, alias="LAVA_RECONCILE_INTERVAL_S", gt=0)
    # An add_funds without an idempotency_key replays an identical one made this recently.
    fund_retry_window_s: int = Field(default=600, alias="LAVA_FUND_RETRY_WINDOW_S", ge=0)
    # GET /metrics needs `Authorization: Bearer <token>`; unset: served to loopback clients only.
    metrics_token: str | None = Field(default=None, alias="LAVA_METRICS_TOKEN")

    # Rate limits shared by every server process through this Redis; unset: per process.
    redis_url: str | None = Field(default=None, alias="LAVA_REDIS_URL")
    # Prefix of this deployment's Redis keys (several deployments may share one Redis).
    redis_key_prefix: str = Field(default="lava:", alias="LAVA_REDIS_KEY_PREFIX")
    # Connecting to Redis, and each answer, may take this long before a rate-limited call
    # is refused with 429 (Redis unreachable).
    redis_timeout_s: float = Field(default=0.5, alias="LAVA_REDIS_TIMEOUT_S", gt=0)

    hold_ttl_s: int = Field(default=600, alias="LAVA_HOLD_TTL_S", ge=10)
    default_max_tokens: int = Field(default=4096, alias="LAVA_DEFAULT_MAX_TOKENS", ge=1)
    # FULL: every commit reaches the disk before the caller hears "ok". NORMAL in WAL mode
    # stays consistent but may lose the last commits on power loss.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(default="FULL", alias="LAVA_SQLITE_SYNCHRONOUS")

    @field_validator("server_url", "wallet_key", "open_signup", mode="before")
    @classmethod
    def _empty_means_unset(cls, value: object) -> object:
        # An MCP bundle passes an optional field the user left empty as "".
        return None if value == "" else value

    @field_validator("database_url", mode="before")
    @classmethod
    def _empty_means_default(cls, value: object) -> object:
        # An MCP client passes an unset optional field as an empty string.
        return default_database_url() if value in (None, "") else value

    @model_validator(mode="after")
    def _holds_outlive_calls(self) -> Settings:
        # A hold that expired while its call still waited on the provider would let the
        # wallet and the spend key be spent twice over: it must outlive the longest wait a
        # call can make before it settles — connecting, the read timeout, and the drain of
        # a call whose client left (an upstream POST is never resent, so no retry adds to
        # it). Calls also extend their hold while they run; this covers a missed extension.
        longest_wait_s = UPSTREAM_CONNECT_TIMEOUT_S + self.upstream_timeout_s + self.stream_drain_s
        if self.hold_ttl_s <= longest_wait_s:
            raise ValueError(
                f"LAVA_HOLD_TTL_S ({self.hold_ttl_s}) must be longer than the longest upstream wait: "
                f"{UPSTREAM_CONNECT_TIMEOUT_S:g} s to connect + LAVA_UPSTREAM_TIMEOUT_S "
                f"({self.upstream_timeout_s:g}) + LAVA_STREAM_DRAIN_S ({self.stream_drain_s:g})"
            )
        return self

    @property
    def payments_mode(self) -> Literal["stripe", "sandbox"]:
        if self.payments == "auto":
            return "stripe" if self.stripe_secret_key else "sandbox"
        return self.payments

    @property
    def money_mode(self) -> Literal["sandbox", "test", "live"]:
        """What this server's money is: the offline sandbox, Stripe's test mode, or live.

        Stripe's mode comes from the key itself (`sk_test_`/`rk_test_` is test mode), never
        from a setting that could disagree with it. A wallet's balance buys paid calls only
        on a server whose money is in the same mode.
        """
        if self.payments_mode == "sandbox":
            return "sandbox"
        key = self.stripe_secret_key or ""
        return "test" if key.startswith(("sk_test_", "rk_test_")) else "live"

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")
