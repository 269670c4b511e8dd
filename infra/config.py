"""Settings: the one place configuration is read.

Sources, highest priority first: explicit keyword arguments, environment variables
(`RECCHAIN_*`, nested sections with `__`, e.g. `RECCHAIN_API__PORT=8000`), a TOML file named by
`RECCHAIN_CONFIG`, then the defaults below, which run the whole system on one machine with an
embedded PostgreSQL and the bundled devnet chain. `DATABASE_URL` is honoured as the conventional
alias of `RECCHAIN_DATABASE_URL`. Secrets (database passwords, relay API keys) come only from the
environment or files and are never logged: they are `SecretStr`.
"""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEPLOYER = "ST1PQHQKV0RJXZFY1DGX8MNSNYVE3VGZJSRTPGZGM"
DEFAULT_CONTRACTS = ("verification", "rec-nft", "marketplace", "sbtc-token")
# The second character of a c32 address is its version (docs/stacks.md, "Networks and
# addresses"): P (22) and M (20) on mainnet, T (26) and N (21) on testnet.
ADDRESS_PREFIXES = {"mainnet": ("SP", "SM"), "testnet": ("ST", "SN")}
_C32 = frozenset("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


class HttpSettings(BaseModel):
    """Connection guards of every HTTP server (API, relay, event observer; httpserver.py)."""

    # A request's line and headers must arrive within this; a client sending them a byte at a
    # time otherwise holds a connection (and a descriptor) for as long as it likes.
    header_timeout_s: float = Field(default=10.0, gt=0)
    # A request's body must arrive within this once its headers have (64 MiB observer payloads
    # from a local stacks-node take well under a second).
    body_timeout_s: float = Field(default=60.0, gt=0)
    max_header_bytes: int = Field(default=64 * 1024, ge=1024)
    # Open connections (HTTP and websocket) of one client address (an IPv6 /64); trusted
    # proxies are exempt, they carry many clients.
    max_connections_per_client: int = Field(default=256, ge=1)
    # Open connections of the whole process; unset = the descriptor limit less a reserve for
    # the database, Redis and files, so a flood is refused before descriptors run out.
    max_connections: int | None = Field(default=None, ge=1)
    # Addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For and
    # X-Forwarded-Proto are believed; from anyone else they are ignored.
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)  # ValueError names the bad entry
        return value


class IndexerSettings(BaseModel):
    """The chain follower (`recchain index`)."""

    source: Literal["observer", "api", "replay"] = "observer"
    listen_host: str = "127.0.0.1"
    listen_port: int = 3700
    api_url: str = "http://127.0.0.1:3999"
    # Sent as `x-api-key` (hosted APIs give a key 500 requests a minute instead of 50).
    api_key: SecretStr | None = None
    # The `api` source paces its requests to this; the hosted limit without a key is 50
    # (docs.hiro.so/resources/guides/rate-limits). Unset: no pacing (an API of one's own).
    api_requests_per_minute: float | None = Field(default=50.0, gt=0)
    max_body_bytes: int = 64 * 1024 * 1024
    # Blocks deeper than this below the tip are final; forks deeper than it are refused loudly.
    finality_depth: int = 1000
    # Nakamoto: a signed block is final once this many Bitcoin blocks bury its burn block
    # (db/finality.py; 6 is Bitcoin's customary settlement depth).
    nakamoto_burn_confirmations: int = Field(default=6, ge=1)
    # Following mainnet from genesis is pointless (and slow): an empty database takes the block
    # at this height as its root without its parent; lower blocks are stored raw, never applied.
    start_height: int = Field(default=1, ge=1)
    # Larger batches mean fewer statements per block (1000 was ~10% faster than 500 in `bench
    # ingest`); up to three batches are in memory at once (one committing on the writer, one
    # being applied, one parsed ahead).
    catchup_batch_blocks: int = 1000
    # Loopback by default: metrics are for the local scraper (containers set 0.0.0.0).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9153


class ApiSettings(BaseModel):
    """The GraphQL API (`recchain serve`)."""

    host: str = "127.0.0.1"
    port: int = 8000
    read_database_url: SecretStr | None = None
    # Readiness fails while the replica is further behind than this.
    read_replica_max_lag_s: float = Field(default=30.0, gt=0)
    # A push waits this long for the replica to replay its commit, then is computed on the
    # primary instead: late by at most this, never stale, never dropped.
    read_replica_push_wait_s: float = Field(default=2.0, gt=0)
    max_depth: int = 12
    max_aliases: int = 30
    max_tokens: int = 2000
    # Field selections (fragments counted per spread) and pairs of same-named siblings a
    # document may hold: validation's cost grows with both (quadratically with the second).
    max_selections: int = Field(default=500, ge=1)
    max_page_size: int = 1000
    max_cost: int = 50_000
    # A leap year of hourly consumption for `hourlyMatching` is ~350 kB of JSON variables.
    max_body_bytes: int = 512 * 1024
    statement_timeout_ms: int = 5_000
    rate_limit_per_minute: int = 600
    cors_origins: list[str] = Field(default_factory=lambda: ["*"])
    ws_allowed_origins: list[str] = Field(default_factory=lambda: ["*"])
    # Off: with thousands of subscribers, per-socket permessage-deflate was ~37% of the push CPU
    # and half the idle memory, for small JSON frames (`bench subscribe --no-deflate`).
    ws_compression: bool = False
    # Each distinct subscription is a topic (or shared stream) the process keeps and recomputes.
    max_subscriptions_per_connection: int = Field(default=100, ge=1)
    max_subscriptions_per_client: int = Field(default=1000, ge=1)
    mask_errors: bool = True
    # Off in production (ops/env/api.env): the schema is published as schema.graphql, and a
    # public endpoint need not hand it, or near misses of its names, to every scanner.
    introspection: bool = True
    field_suggestions: bool = True
    # Second lines behind the cost estimate: the encoded answer's size and an HTTP request's
    # time from its body to its answer.
    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    request_timeout_ms: int = Field(default=15_000, ge=1)
    graphiql: bool = True
    # Answers of chain-only queries kept per chain tip (graphql_api/answercache.py).
    answer_cache: bool = True
    answer_cache_max_entries: int = Field(default=10_000, ge=1)
    answer_cache_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Bounds what a LISTEN connection that died without a word could serve from an old tip.
    answer_cache_max_age_s: float = Field(default=60.0, gt=0)


class RelaySettings(BaseModel):
    """The transaction relay (`recchain relay`)."""

    host: str = "127.0.0.1"
    port: int = 8010
    node_url: str = "http://127.0.0.1:20443"
    api_keys: list[SecretStr] = Field(default_factory=list)
    allowed_functions: list[str] = Field(
        default_factory=lambda: [
            "verification.register-facility",
            "verification.submit-report",
            "verification.attest-report",
            "rec-nft.mint",
            "rec-nft.split",
            "rec-nft.retire",
            "rec-nft.transfer",
            "marketplace.list-fixed",
            "marketplace.update-price",
            "marketplace.cancel-listing",
            "marketplace.buy",
            "marketplace.buy-and-retire",
            "marketplace.create-auction",
            "marketplace.place-bid",
            "marketplace.settle-auction",
        ]
    )
    min_fee: int = 180
    max_fee: int = 5_000_000
    max_body_bytes: int = 512 * 1024
    rate_limit_per_minute: int = 120
    max_concurrency: int = 32


class MetadataSettings(BaseModel):
    """IPFS / SIP-016 metadata resolution."""

    kubo_rpc_url: str | None = None
    gateways: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8080"])
    allow_https: bool = False
    max_bytes: int = 1024 * 1024
    request_timeout_s: float = 10.0
    total_timeout_s: float = 30.0
    max_attempts: int = 8
    workers: int = 4
    # Jobs one worker claims at once: they are resolved concurrently and stored together, so
    # the queue's round trips are shared (the per-host limits still apply to every request).
    batch_size: int = Field(default=16, ge=1)
    per_host_concurrency: int = 4
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9154
    # Path gateways (`/ipfs/CID` returning file bytes) are used only when the bytes can be
    # checked against the CID; `gateways` above are trustless (verified block by block).
    path_gateways: list[str] = Field(default_factory=list)
    # Plain http(s) token URIs: hosts allowed when `allow_https` (empty = any host with a public
    # address). Only a listed host may resolve to an internal address (loopback, private,
    # link-local...), on the first hop or after a redirect.
    https_allowed_hosts: list[str] = Field(default_factory=list)
    max_redirects: int = 3
    per_host_rate_per_s: float = 20.0
    backoff_initial_s: float = 5.0
    backoff_max_s: float = 3600.0
    lease_s: float = 120.0
    poll_interval_s: float = 1.0


class WebhookSettings(BaseModel):
    """Webhooks: registration (`recchain webhooks`, the relay's `/v1/webhooks`) and delivery
    (`recchain webhooks send`)."""

    # Endpoint hosts are refused when they resolve to internal addresses (loopback, private,
    # link-local...) unless listed here by name, address or CIDR network.
    allow_internal_hosts: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=3.0, gt=0)
    # Only the status counts; at most this much of a response body is read (kept for history).
    max_response_bytes: int = Field(default=1024, ge=0)
    # Endpoints one sender process delivers to at once (each endpoint gets one at a time).
    concurrency: int = Field(default=32, ge=1)
    backoff_initial_s: float = Field(default=5.0, gt=0)
    backoff_max_s: float = Field(default=3600.0, gt=0)
    # An event still failing this long after it was queued goes to the dead letters.
    dead_letter_after_s: float = Field(default=3 * 86400.0, gt=0)
    # After `rotate-secret`, deliveries carry a signature with the previous secret this long.
    rotation_overlap_s: float = Field(default=86400.0, ge=0)
    poll_interval_s: float = Field(default=1.0, gt=0)
    # Delivered, dead and retracted events (and their attempts) older than this are deleted.
    retention_days: float = Field(default=30.0, gt=0)
    max_endpoints_per_key: int = Field(default=20, ge=1)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9156


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RECCHAIN_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    # None means: start (or reuse) the embedded PostgreSQL under `data_dir`.
    database_url: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("RECCHAIN_DATABASE_URL", "DATABASE_URL")
    )
    # Optional: rate limits shared by every API and relay replica; unset = per process.
    redis_url: SecretStr | None = None
    data_dir: Path = PROJECT_ROOT / ".data"
    network: Literal["mainnet", "testnet"] = "testnet"
    deployer: str = DEFAULT_DEPLOYER
    contracts: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTRACTS))
    log_level: str = "INFO"
    log_json: bool = False

    http: HttpSettings = Field(default_factory=HttpSettings)
    indexer: IndexerSettings = Field(default_factory=IndexerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    metadata: MetadataSettings = Field(default_factory=MetadataSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)

    @field_validator("database_url", "redis_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value in ("", None) else value

    @model_validator(mode="after")
    def _addresses_of_the_network(self) -> Settings:
        """Every watched contract must be `ADDRESS.name` with an address of `network`: a
        testnet id on mainnet (or the reverse) would match nothing the chain ever sends, and
        every relayed call would be refused, silently."""
        prefixes = ADDRESS_PREFIXES[self.network]
        for cid in self.watched_contracts:
            address, _, name = cid.partition(".")
            where = "deployer" if not any(c == cid for c in self.contracts) else "contracts"
            if not name or "." in name or not (1 <= len(name) <= 128):
                raise ValueError(f"{where}: {cid!r} is not a contract id ADDRESS.name")
            if not (28 <= len(address) <= 41 and set(address[1:]) <= _C32):
                raise ValueError(f"{where}: {address!r} of {cid!r} is not a c32 address")
            if not address.startswith(prefixes):
                other = "testnet" if self.network == "mainnet" else "mainnet"
                raise ValueError(
                    f"{where}: {cid!r} has a {other} address but network is {self.network} "
                    f"({self.network} addresses start with {' or '.join(prefixes)}); set "
                    "deployer, or list the contracts by their fully qualified ids"
                )
        return self

    @property
    def chain_id(self) -> int:
        return 0x00000001 if self.network == "mainnet" else 0x80000000

    @property
    def watched_contracts(self) -> frozenset[str]:
        """Fully-qualified contract identifiers the indexer follows; all else is skipped."""
        return frozenset(self.contract_id(c) for c in self.contracts)

    def contract_id(self, name: str) -> str:
        """A contract's id from its name: as given when fully qualified; a short name is the
        watched contract of that name when `contracts` lists it fully qualified (contracts
        deployed at real addresses, e.g. `SP3K8....rec-nft`), else the deployer's."""
        if "." in name:
            return name
        listed = [c for c in self.contracts if "." in c and c.rpartition(".")[2] == name]
        return listed[0] if len(listed) == 1 else f"{self.deployer}.{name}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = os.environ.get("RECCHAIN_CONFIG")
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        sources.append(file_secret_settings)
        return tuple(sources)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
