"""The one typed, frozen settings object.

Layers, lowest first: defaults -> profile -> config file (TOML) -> `TRADEOS_*` environment ->
explicit overrides (the CLI). Unknown keys and bad values fail at start with one message naming the
key. Secrets are `SecretUrl`/`SecretStr`, so they never show in `repr` or logs.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from tradeos_lab.errors import ConfigError
from tradeos_lab.secrets import SecretUrl, register_secret
from tradeos_lab.symbols import Timeframe, canonical_name, canonical_symbol

ENV_PREFIX = "TRADEOS_"
CONFIG_ENV = "TRADEOS_CONFIG"
# Environment names that belong to the test-suite or the config locator, not to the settings.
_ENV_NOT_SETTINGS = (CONFIG_ENV, "TRADEOS_TEST_")

RedisRole = Literal["bus", "cache", "flags"]

# Market-data feeds of the pipeline's ingestion; `replay:PATH` replays a CSV/Parquet file.
PIPELINE_FEEDS = ("synthetic", "coinbase", "alpaca")
REPLAY_FEED_PREFIX = "replay:"
# The brokers a stack can trade at: the built-in paper broker and Alpaca's paper account.
BROKERS = ("paper", "alpaca")
# Every pipeline service in pipeline order, bars in to positions out; the pipeline's registry
# holds one service class per name in this order.
PIPELINE_SERVICES = (
    "ingestion",
    "news_fetcher",
    "sentiment_scorer",
    "signal_engine",
    "signal_modifier",
    "feasibility",
    "execution",
    "positions",
    "tca",
    "audit_trail",
    "agent",
)
# The news services poll the internet: they join the default services only when a news source
# (a feed or a subreddit) is configured.
NEWS_SERVICES = ("news_fetcher", "sentiment_scorer")
_SUBREDDIT = re.compile(r"[A-Za-z0-9_]{2,21}")
# A list setting from the environment or the CLI may be one comma-separated string
# (TRADEOS_PIPELINE_SYMBOLS=BTC-USD,ETH-USD) rather than JSON.
NameList = Annotated[tuple[str, ...], NoDecode]


@dataclass(frozen=True)
class Profile:
    """Buffer sizes and TTLs per environment: development runs with smaller buffers and memory
    limits than production, so a laptop holds the whole stack."""

    stream_maxlen: int
    dead_letter_maxlen: int
    cache_bars: int
    bar_ttl_seconds: dict[str, int]
    price_ttl_seconds: int
    heartbeat_ttl_seconds: int
    cache_maxmemory: str
    flags_maxmemory: str


PROFILES: dict[str, Profile] = {
    "dev": Profile(
        stream_maxlen=10_000,
        dead_letter_maxlen=10_000,
        cache_bars=500,
        bar_ttl_seconds={"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400},
        price_ttl_seconds=300,
        heartbeat_ttl_seconds=15,
        cache_maxmemory="256mb",
        flags_maxmemory="64mb",
    ),
    "prod": Profile(
        stream_maxlen=1_000_000,
        dead_letter_maxlen=100_000,
        cache_bars=500,
        bar_ttl_seconds={"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "1d": 86400},
        price_ttl_seconds=300,
        heartbeat_ttl_seconds=15,
        cache_maxmemory="2gb",
        flags_maxmemory="256mb",
    ),
}

_REDIS_SCHEMES = {"redis", "rediss", "unix"}
_LAKE_SCHEMES = {"chdb", "http", "https", "clickhouse", "clickhouses"}


def _chdb_directory(url: SecretUrl) -> str:
    """`chdb:///abs/path` or `chdb://relative/path` -> the directory ("" when none is named)."""
    return url.get_secret_value().split("://", 1)[1].split("?", 1)[0]


class Settings(BaseSettings):
    """Everything configurable, validated once at start; immutable afterwards."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="forbid",
        frozen=True,
        case_sensitive=False,
        validate_default=True,
    )

    profile: Literal["dev", "prod"] = "dev"
    data_dir: Path = Field(
        default_factory=lambda: find_data_dir(Path.cwd()),
        description="embedded stack state; default: the nearest .tradeos upwards, else ./.tradeos",
    )
    namespace: str = Field(
        default="tradeos",
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="prefix of every Redis key and stream name",
    )

    # One URL per part; None means the embedded default under data_dir.
    bus_url: SecretUrl | None = None
    cache_url: SecretUrl | None = None
    flags_url: SecretUrl | None = None
    records_url: SecretUrl | None = None
    lake_url: SecretUrl | None = None

    # Observability
    service_name: str = Field(default="tradeos-lab", min_length=1, max_length=64)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    health_host: str = "127.0.0.1"
    health_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")

    # Profile overrides (None keeps the profile's value)
    stream_maxlen: int | None = Field(default=None, ge=100)
    dead_letter_maxlen: int | None = Field(default=None, ge=100)
    cache_bars: int | None = Field(default=None, ge=1, le=100_000)
    bar_ttl_1m_seconds: int | None = Field(default=None, ge=1)
    bar_ttl_5m_seconds: int | None = Field(default=None, ge=1)

    # Near cache of each process that reads bars: bar blocks kept in memory and invalidated by the
    # cache Redis (CLIENT TRACKING), so a repeated read costs no round trip. One entry is one block
    # of cache_bars x 64 bytes (32 kB at 500 bars), least recently read dropped first; 0 = off.
    cache_near_entries: int = Field(default=1000, ge=0, le=100_000)

    # Redis client timeouts per tier, in seconds: connect, and read (a reply that never comes, as
    # from a stalled server). Flags are short so a kill-switch check of a stalled flags server
    # answers HALTED within connect + read (0.5 s); the bus's read must outlast the longest BLOCK
    # of a blocking XREADGROUP (a few seconds at most), or the blocking read would time out.
    flags_connect_timeout_seconds: float = Field(default=0.25, gt=0, le=60)
    flags_read_timeout_seconds: float = Field(default=0.25, gt=0, le=60)
    cache_connect_timeout_seconds: float = Field(default=1.0, gt=0, le=60)
    cache_read_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    bus_connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    bus_read_timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    # Consumers
    max_deliveries: int = Field(default=5, ge=1, le=1000)
    claim_idle_ms: int = Field(default=30_000, ge=100)
    # How long a consumer retries a handler failing with a transient error (its store is down)
    # in place, uncounted, before it dead-letters the message with a risk event.
    transient_retry_s: float = Field(default=300.0, ge=0)

    # Lake retention per resolution tier, in days (0 keeps bars forever)
    lake_ttl_1m_days: int = Field(default=730, ge=0)
    lake_ttl_5m_days: int = Field(default=730, ge=0)
    lake_ttl_1h_days: int = Field(default=3650, ge=0)
    lake_ttl_1d_days: int = Field(default=0, ge=0)
    backfill_history_days: int = Field(default=730, ge=1)

    # Providers and brokers
    coinbase_url: str = "https://api.exchange.coinbase.com"
    alpaca_data_url: str = "https://data.alpaca.markets"
    alpaca_trading_url: str = "https://paper-api.alpaca.markets"
    alpaca_api_key: SecretStr | None = None
    alpaca_secret_key: SecretStr | None = None
    # Alpaca paper trading: the trade-updates websocket (None: the trading URL's /stream), the
    # account's documented 200 requests a minute (shared by every process through the flags tier)
    # and the timeout of one request, after which a submit's outcome is unknown and looked up.
    alpaca_stream_url: str | None = None
    alpaca_rate_limit_per_minute: int = Field(default=200, ge=1, le=100_000)
    alpaca_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Where Execution places orders (paper | alpaca); how often it reconciles the records with
    # that broker (besides once at start, before its first intent); how often it polls Alpaca
    # for the updates of the orders it placed (their fills come after the submit's answer).
    execution_broker: str = Field(default="paper", description="paper | alpaca")
    execution_reconcile_interval_s: float = Field(default=60.0, gt=0, le=86_400)
    execution_updates_poll_s: float = Field(default=2.0, gt=0, le=3_600)

    # Voila apps (`tradeos-lab apps`, `up`), served on loopback only. Every request needs the
    # token: this one, or (None) a new one generated and printed once per run.
    apps_token: SecretStr | None = Field(default=None, min_length=16, max_length=256)
    apps_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")
    # JupyterLab on the stack (`tradeos-lab lab`), loopback only, its own token the same way
    # (apart from the apps': a lab runs any code, an app only its own notebook).
    lab_token: SecretStr | None = Field(default=None, min_length=16, max_length=256)
    lab_port: int = Field(default=0, ge=0, le=65535, description="0 picks a free port")

    # Paper-trading pipeline: what `tradeos-lab up` runs. Strategy names are checked for their
    # spelling here and resolved (imported) when a service starts, so loading the settings never
    # imports a user's strategy file.
    pipeline_feed: str = Field(
        default="synthetic", description="synthetic | replay:PATH | coinbase | alpaca"
    )
    pipeline_symbols: NameList = ("BTC-USD", "ETH-USD")
    pipeline_timeframe: Timeframe = Timeframe.M1
    pipeline_strategies: NameList = Field(
        default=("sma_cross",), description="registered names, module:Class or path.py:Class"
    )
    # Wall seconds between bars of the synthetic and replay feeds, so a demo trades in seconds.
    pipeline_bar_interval_s: float = Field(default=0.25, gt=0, le=3600)
    pipeline_services: NameList = Field(
        default=tuple(n for n in PIPELINE_SERVICES if n not in NEWS_SERVICES),
        description="default: every service, the news services only when a source is set",
    )

    # News and sentiment (services news_fetcher and sentiment_scorer). RSS/Atom feed URLs and
    # subreddits are polled on their own schedules; every request has a timeout and a size cap,
    # so a slow or huge feed cannot hold the fetcher.
    news_feeds: NameList = ()
    news_subreddits: NameList = ()
    news_feed_poll_s: float = Field(default=300.0, ge=1, le=86_400)
    news_reddit_poll_s: float = Field(default=120.0, ge=1, le=86_400)
    news_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    news_max_feed_bytes: int = Field(default=5_000_000, ge=1024, le=100_000_000)
    news_reddit_limit: int = Field(default=50, ge=1, le=100, description="posts per poll")
    # How long an article's content hash is remembered in the flags tier (its dedup key's TTL).
    news_dedup_ttl_s: int = Field(default=7 * 86_400, ge=60)
    # Tickers spotted in plain words besides cashtags; the pipeline's symbols always are.
    news_symbols: NameList = ()
    news_scorer: str = Field(default="vader", description="vader | finbert:PATH (local weights)")
    # How long a ticker's scored news stays in the cache for its decayed sentiment.
    news_sentiment_retention_s: int = Field(default=3 * 86_400, ge=60)
    reddit_client_id: SecretStr | None = None
    reddit_client_secret: SecretStr | None = None
    reddit_user_agent: str = Field(
        default="python:tradeos-lab:0.1 (news fetcher, read-only)", min_length=1, max_length=256
    )
    reddit_url: str = "https://www.reddit.com"
    reddit_oauth_url: str = "https://oauth.reddit.com"

    @model_validator(mode="before")
    @classmethod
    def _news_services_by_default(cls, data: Any) -> Any:
        """With a news source configured and no explicit `pipeline_services`, the default
        services include the news fetcher and the sentiment scorer."""
        if not isinstance(data, dict):
            return data
        given = {str(k).lower(): v for k, v in data.items()}
        if "pipeline_services" in given:
            return data
        if any(given.get(k) for k in ("news_feeds", "news_subreddits")):
            return {**data, "pipeline_services": PIPELINE_SERVICES}
        return data

    @field_validator("news_feeds")
    @classmethod
    def _news_feeds(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"news feed {url!r} is not an http(s) URL")
        return tuple(dict.fromkeys(urls))

    @field_validator("news_subreddits")
    @classmethod
    def _news_subreddits(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        chosen = [n.removeprefix("r/") for n in names]
        for name in chosen:
            if not _SUBREDDIT.fullmatch(name):
                raise ValueError(f"{name!r} is not a subreddit name (2-21 of A-Z, 0-9, _)")
        return tuple(dict.fromkeys(n.lower() for n in chosen))

    @field_validator("news_symbols")
    @classmethod
    def _news_symbols(cls, symbols: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(canonical_symbol(s) for s in symbols))

    @field_validator("news_scorer")
    @classmethod
    def _news_scorer(cls, scorer: str) -> str:
        name, _, path = scorer.partition(":")
        if name.lower() == "vader" and not path:
            return "vader"
        if name.lower() == "finbert" and path:
            return f"finbert:{path}"
        raise ValueError(f"unknown news scorer {scorer!r}; choose vader or finbert:PATH")

    @field_validator("reddit_url", "reddit_oauth_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        return url.rstrip("/")

    # Research sweeps: an existing Dask cluster's scheduler (tcp://host:8786) runs them when set;
    # otherwise `research_workers` > 1 starts a LocalCluster of that many worker processes.
    research_scheduler: str | None = Field(default=None, pattern=r"^(tcp|tls|inproc)://\S+$")
    research_workers: int = Field(default=1, ge=1, le=256)

    @field_validator("execution_broker")
    @classmethod
    def _execution_broker(cls, broker: str) -> str:
        if broker.lower() not in BROKERS:
            raise ValueError(f"unknown broker {broker!r}; choose one of {', '.join(BROKERS)}")
        return broker.lower()

    @field_validator("pipeline_feed")
    @classmethod
    def _pipeline_feed(cls, feed: str) -> str:
        if feed.startswith(REPLAY_FEED_PREFIX):
            if not feed.removeprefix(REPLAY_FEED_PREFIX):
                raise ValueError("replay feed needs a file: replay:PATH (CSV or Parquet)")
            return feed
        if feed.lower() not in PIPELINE_FEEDS:
            choices = ", ".join((*PIPELINE_FEEDS, "replay:PATH"))
            raise ValueError(f"unknown feed {feed!r}; choose one of {choices}")
        return feed.lower()

    @field_validator(
        "pipeline_symbols",
        "pipeline_strategies",
        "pipeline_services",
        "news_feeds",
        "news_subreddits",
        "news_symbols",
        mode="before",
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("pipeline_symbols")
    @classmethod
    def _pipeline_symbols(cls, symbols: tuple[str, ...]) -> tuple[str, ...]:
        if not symbols:
            raise ValueError("at least one symbol is needed")
        return tuple(dict.fromkeys(canonical_symbol(s) for s in symbols))

    @field_validator("pipeline_strategies")
    @classmethod
    def _pipeline_strategies(cls, refs: tuple[str, ...]) -> tuple[str, ...]:
        if not refs:
            raise ValueError("at least one strategy is needed")
        # A registered name is canonical lower case; module:Class and path.py:Class keep their
        # spelling (Python names and paths are case-sensitive).
        return tuple(
            dict.fromkeys(r if ":" in r else canonical_name(r, "strategy name") for r in refs)
        )

    @field_validator("pipeline_services")
    @classmethod
    def _pipeline_services(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        chosen = {canonical_name(n, "service name") for n in names}
        unknown = sorted(chosen - set(PIPELINE_SERVICES))
        if unknown:
            raise ValueError(
                f"unknown service {unknown[0]!r}; choose among {', '.join(PIPELINE_SERVICES)}"
            )
        return tuple(n for n in PIPELINE_SERVICES if n in chosen)

    @field_validator("bus_url", "cache_url", "flags_url")
    @classmethod
    def _redis_scheme(cls, url: SecretUrl | None) -> SecretUrl | None:
        if url is not None and url.scheme not in _REDIS_SCHEMES:
            raise ValueError(f"scheme {url.scheme!r} is not a Redis URL (redis, rediss, unix)")
        return url

    @field_validator("lake_url")
    @classmethod
    def _lake_scheme(cls, url: SecretUrl | None) -> SecretUrl | None:
        if url is not None and url.scheme not in _LAKE_SCHEMES:
            raise ValueError(f"scheme {url.scheme!r} is not chdb://PATH or a ClickHouse URL")
        if url is not None and url.scheme == "chdb" and not _chdb_directory(url):
            raise ValueError("a chdb:// lake URL needs a directory: chdb:///path/to/lake")
        return url

    @field_validator("records_url")
    @classmethod
    def _records_scheme(cls, url: SecretUrl | None) -> SecretUrl | None:
        if url is not None and url.scheme.split("+")[0] not in {"sqlite", "postgresql"}:
            raise ValueError("records_url must be a sqlite:// or postgresql+psycopg:// URL")
        return url

    @model_validator(mode="after")
    def _register_and_warn(self) -> Settings:
        secrets = (
            self.alpaca_api_key,
            self.alpaca_secret_key,
            self.apps_token,
            self.lab_token,
            self.reddit_client_id,
            self.reddit_client_secret,
        )
        for key in secrets:
            if key is not None:
                register_secret(key.get_secret_value())
        if self.news_subreddits and not (self.reddit_client_id and self.reddit_client_secret):
            raise ValueError(
                "news_subreddits needs reddit_client_id and reddit_client_secret (a Reddit "
                "script app's credentials; reading is read-only)"
            )
        if self.execution_broker == "alpaca" and not (
            self.alpaca_api_key and self.alpaca_secret_key
        ):
            raise ValueError(
                "execution_broker alpaca needs alpaca_api_key and alpaca_secret_key "
                "(TRADEOS_ALPACA_API_KEY, TRADEOS_ALPACA_SECRET_KEY)"
            )
        servers = [_redis_server(u) for u in (self.bus_url, self.cache_url, self.flags_url) if u]
        if len(servers) != len(set(servers)):
            warnings.warn(
                "bus, cache and flags share one Redis server: eviction policy is per server, so "
                "the tiers cannot have their own (bus noeviction, cache allkeys-lru, flags "
                "volatile-ttl). Use one server per tier in production.",
                SharedRedisServerWarning,
                stacklevel=2,
            )
        return self

    # ---- derived values -------------------------------------------------------------------

    @property
    def limits(self) -> Profile:
        """The active profile with this object's overrides applied."""
        base = PROFILES[self.profile]
        ttl = dict(base.bar_ttl_seconds)
        if self.bar_ttl_1m_seconds is not None:
            ttl["1m"] = self.bar_ttl_1m_seconds
        if self.bar_ttl_5m_seconds is not None:
            ttl["5m"] = self.bar_ttl_5m_seconds
        return Profile(
            stream_maxlen=self.stream_maxlen or base.stream_maxlen,
            dead_letter_maxlen=self.dead_letter_maxlen or base.dead_letter_maxlen,
            cache_bars=self.cache_bars or base.cache_bars,
            bar_ttl_seconds=ttl,
            price_ttl_seconds=base.price_ttl_seconds,
            heartbeat_ttl_seconds=base.heartbeat_ttl_seconds,
            cache_maxmemory=base.cache_maxmemory,
            flags_maxmemory=base.flags_maxmemory,
        )

    def lake_ttl_days(self, timeframe: Timeframe | str) -> int:
        """Retention of one resolution tier in the lake; 0 keeps bars forever."""
        tf = Timeframe.parse(timeframe)
        return {
            Timeframe.M1: self.lake_ttl_1m_days,
            Timeframe.M5: self.lake_ttl_5m_days,
            Timeframe.M15: self.lake_ttl_5m_days,
            Timeframe.H1: self.lake_ttl_1h_days,
            Timeframe.D1: self.lake_ttl_1d_days,
        }[tf]

    def redis_timeouts(self, role: RedisRole) -> tuple[float, float]:
        """(connect, read) timeouts in seconds of the clients of one Redis tier."""
        return {
            "bus": (self.bus_connect_timeout_seconds, self.bus_read_timeout_seconds),
            "cache": (self.cache_connect_timeout_seconds, self.cache_read_timeout_seconds),
            "flags": (self.flags_connect_timeout_seconds, self.flags_read_timeout_seconds),
        }[role]

    def redis_url(self, role: RedisRole) -> SecretUrl | None:
        return {"bus": self.bus_url, "cache": self.cache_url, "flags": self.flags_url}[role]

    @property
    def embedded_parts(self) -> list[str]:
        """Parts that run embedded because no URL was given for them."""
        urls = {
            "bus": self.bus_url,
            "cache": self.cache_url,
            "flags": self.flags_url,
            "records": self.records_url,
            "lake": self.lake_url,
        }
        return [name for name, url in urls.items() if url is None]

    @property
    def chdb_lake_path(self) -> Path | None:
        """The directory of a lake on chdb: the embedded default under the data directory, or
        `chdb://PATH`; None for a ClickHouse server."""
        if self.lake_url is None:
            return self.data_dir.expanduser() / "lake"
        if self.lake_url.scheme != "chdb":
            return None
        return Path(_chdb_directory(self.lake_url)).expanduser()

    @property
    def stack_parts(self) -> list[str]:
        """Parts a running stack owns and serves to the other processes: the embedded ones, and
        a lake on chdb wherever it lives, since chdb opens a directory in one process only."""
        parts = self.embedded_parts
        if "lake" not in parts and self.chdb_lake_path is not None:
            parts.append("lake")
        return parts

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The config file is merged by load_settings() beneath init values; dotenv is not used.
        return (init_settings, env_settings)


DATA_DIR_NAME = ".tradeos"


def find_data_dir(start: Path) -> Path:
    """The nearest existing `.tradeos` in `start` or above it, so a notebook in `notebooks/`
    finds the stack started at the project root; `start/.tradeos` when there is none."""
    for folder in (start, *start.parents):
        if (folder / DATA_DIR_NAME).is_dir():
            return folder / DATA_DIR_NAME
    return start / DATA_DIR_NAME


class SharedRedisServerWarning(UserWarning):
    """Two Redis tiers point at one server, so their eviction policies cannot differ."""


def _redis_server(url: SecretUrl) -> str:
    parts = urlsplit(url.get_secret_value())
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname}:{parts.port or 6379}"


def _field_names() -> set[str]:
    return set(Settings.model_fields)


def _check_unknown(keys: list[str], where: str, env: bool = False) -> None:
    fields = _field_names()

    def spell(name: str) -> str:
        return f"{ENV_PREFIX}{name.upper()}" if env else name

    for key in keys:
        if key.lower() not in fields:
            near = difflib.get_close_matches(key.lower(), sorted(fields), n=1)
            hint = f"; did you mean {spell(near[0])}?" if near else ""
            raise ConfigError(f"unknown setting {spell(key)} in {where}{hint}")


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a TOML file") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    section = data.get("tradeos", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path}: [tradeos] must be a table")
    _check_unknown(list(section), f"config file {path}")
    return section


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings from every layer; raise `ConfigError` naming the first bad key."""
    env_keys = [
        k[len(ENV_PREFIX) :]
        for k in os.environ
        if k.upper().startswith(ENV_PREFIX) and not k.upper().startswith(_ENV_NOT_SETTINGS)
    ]
    _check_unknown(env_keys, "the environment", env=True)
    _check_unknown([k for k, v in overrides.items() if v is not None], "the overrides")

    path = config_file or os.environ.get(CONFIG_ENV)
    file_values = _read_config_file(Path(path)) if path else {}
    env_present = {k.lower() for k in env_keys}
    # File values sit beneath the environment: drop those the environment sets.
    layered = {k: v for k, v in file_values.items() if k.lower() not in env_present}
    layered.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**layered)
    except PydanticValidationError as e:
        raise ConfigError(_describe(e, file_values, env_present)) from None
    except SettingsError as e:
        # an environment value pydantic-settings could not decode; its message names the field
        raise ConfigError(f"invalid setting in the environment: {e}") from None


def _describe(
    error: PydanticValidationError, file_values: dict[str, Any], env_present: set[str]
) -> str:
    first = error.errors()[0]
    if not first["loc"]:
        return f"invalid settings: {first['msg']}"
    key = str(first["loc"][0])
    if key.lower() in env_present:
        where = f"{ENV_PREFIX}{key.upper()}"
    elif key in file_values:
        where = f"{key} (config file)"
    else:
        where = key
    # Never echo the rejected value: it may be a secret.
    return f"invalid setting {where}: {first['msg'].removeprefix('Value error, ')}"
