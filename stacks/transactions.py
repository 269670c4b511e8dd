"""Stacks transactions (SIP-005 wire format): decode, re-encode, txid and signature checks.

Layout: version, chain id, authorization (origin and, when sponsored, sponsor spending
conditions), anchor mode, post-condition mode, post-conditions, payload. Signature checks follow
stacks-core's sighash chain; see `verify_signatures`.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from dataclasses import dataclass
from typing import Any, TypeAlias

import coincurve

from stacks import clarity
from stacks.c32 import (
    MAINNET_MULTI_SIG,
    MAINNET_SINGLE_SIG,
    TESTNET_MULTI_SIG,
    TESTNET_SINGLE_SIG,
    address_from_hash160,
)
from stacks.clarity import ClarityDecodeError, ClarityValue, PrincipalCV
from stacks.hashing import hash160, sha256, sha512_256

TX_VERSION_MAINNET = 0x00
TX_VERSION_TESTNET = 0x80
CHAIN_ID_MAINNET = 0x00000001
CHAIN_ID_TESTNET = 0x80000000

AUTH_STANDARD = 0x04
AUTH_SPONSORED = 0x05


class HashMode(enum.IntEnum):
    P2PKH = 0x00
    P2SH = 0x01
    P2WPKH = 0x02
    P2WSH = 0x03
    P2SH_NON_SEQUENTIAL = 0x05  # SIP-027 order-independent multisig
    P2WSH_NON_SEQUENTIAL = 0x07


SINGLE_SIG_MODES = frozenset({HashMode.P2PKH, HashMode.P2WPKH})
NON_SEQUENTIAL_MODES = frozenset({HashMode.P2SH_NON_SEQUENTIAL, HashMode.P2WSH_NON_SEQUENTIAL})
SEGWIT_MODES = frozenset({HashMode.P2WPKH, HashMode.P2WSH, HashMode.P2WSH_NON_SEQUENTIAL})

KEY_COMPRESSED = 0x00
KEY_UNCOMPRESSED = 0x01

ANCHOR_MODES = {1: "on-chain-only", 2: "off-chain-only", 3: "any"}
POST_CONDITION_MODES = {1: "allow", 2: "deny", 3: "originator"}
FUNGIBLE_CODES = {1: "eq", 2: "gt", 3: "gte", 4: "lt", 5: "lte"}
NFT_CODES = {0x10: "sent", 0x11: "not-sent", 0x12: "maybe-sent"}
POX_CODES = {0x30: "will-not-perform", 0x31: "may-perform", 0x32: "will-perform"}
POST_CONDITION_KINDS = {0: "stx", 1: "ft", 2: "nft", 3: "staking", 4: "pox"}
CLARITY_VERSIONS = frozenset(range(1, 7))
TENURE_CHANGE_CAUSES = {
    0: "block-found",
    1: "extended",
    2: "extended-runtime",
    3: "extended-read-count",
    4: "extended-read-length",
    5: "extended-write-count",
    6: "extended-write-length",
}
MEMO_LENGTH = 34
MICROBLOCK_HEADER_LENGTH = 1 + 2 + 32 + 32 + 65


class TransactionDecodeError(ValueError):
    """Malformed transaction bytes; `offset` is where decoding stopped."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})")
        self.offset = offset


# ----------------------------------------------------------------------------------- model


@dataclass(frozen=True, slots=True)
class SingleSigCondition:
    hash_mode: HashMode
    signer: bytes
    nonce: int
    fee: int
    key_encoding: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class AuthField:
    """One multisig entry: a bare public key (33 bytes, always sent compressed) of a key that
    did not sign, or a 65-byte recoverable signature. `compressed` tells how the key hashes."""

    is_signature: bool
    compressed: bool
    data: bytes


@dataclass(frozen=True, slots=True)
class MultiSigCondition:
    hash_mode: HashMode
    signer: bytes
    nonce: int
    fee: int
    fields: tuple[AuthField, ...]
    signatures_required: int


SpendingCondition: TypeAlias = SingleSigCondition | MultiSigCondition


@dataclass(frozen=True, slots=True)
class Authorization:
    auth_type: int
    origin: SpendingCondition
    sponsor: SpendingCondition | None = None


@dataclass(frozen=True, slots=True)
class PostConditionPrincipal:
    """`origin` (version/hash160 None), a standard principal, or a contract principal."""

    kind: str
    version: int | None = None
    hash160: bytes | None = None
    contract_name: str | None = None

    def __str__(self) -> str:
        if self.kind == "origin" or self.version is None or self.hash160 is None:
            return "origin"
        address = address_from_hash160(self.version, self.hash160)
        return address if self.contract_name is None else f"{address}.{self.contract_name}"


@dataclass(frozen=True, slots=True)
class AssetInfo:
    version: int
    hash160: bytes
    contract_name: str
    asset_name: str

    def __str__(self) -> str:
        address = address_from_hash160(self.version, self.hash160)
        return f"{address}.{self.contract_name}::{self.asset_name}"


@dataclass(frozen=True, slots=True)
class PostCondition:
    kind: str  # stx, ft, nft, staking, pox
    principal: PostConditionPrincipal
    condition_code: int
    amount: int | None = None
    asset: AssetInfo | None = None
    asset_id: ClarityValue | None = None

    @property
    def condition(self) -> str:
        if self.kind == "nft":
            return NFT_CODES[self.condition_code]
        if self.kind == "pox":
            return POX_CODES[self.condition_code]
        return FUNGIBLE_CODES[self.condition_code]


@dataclass(frozen=True, slots=True)
class TokenTransferPayload:
    recipient: PrincipalCV
    amount: int
    memo: bytes

    @property
    def memo_text(self) -> str:
        return self.memo.rstrip(b"\x00").decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class SmartContractPayload:
    contract_name: str
    code_body: str
    clarity_version: int | None = None  # None: payload type 1, otherwise versioned (type 6)


@dataclass(frozen=True, slots=True)
class ContractCallPayload:
    address_version: int
    address_hash160: bytes
    contract_name: str
    function_name: str
    args: tuple[ClarityValue, ...]

    @property
    def contract(self) -> str:
        address = address_from_hash160(self.address_version, self.address_hash160)
        return f"{address}.{self.contract_name}"


@dataclass(frozen=True, slots=True)
class PoisonMicroblockPayload:
    header_1: bytes
    header_2: bytes


@dataclass(frozen=True, slots=True)
class CoinbasePayload:
    """Payload 4 (plain), 5 (alt recipient) or 8 (Nakamoto, with VRF proof)."""

    payload_type: int
    coinbase: bytes
    alt_recipient: PrincipalCV | None = None
    vrf_proof: bytes | None = None


@dataclass(frozen=True, slots=True)
class TenureChangePayload:
    tenure_consensus_hash: bytes
    prev_tenure_consensus_hash: bytes
    burn_view_consensus_hash: bytes
    previous_tenure_end: bytes
    previous_tenure_blocks: int
    cause: int
    pubkey_hash: bytes


Payload: TypeAlias = (
    TokenTransferPayload
    | SmartContractPayload
    | ContractCallPayload
    | PoisonMicroblockPayload
    | CoinbasePayload
    | TenureChangePayload
)


@dataclass(frozen=True, slots=True)
class Transaction:
    version: int
    chain_id: int
    auth: Authorization
    anchor_mode: int
    post_condition_mode: int
    post_conditions: tuple[PostCondition, ...]
    payload: Payload

    @property
    def is_mainnet(self) -> bool:
        return self.version == TX_VERSION_MAINNET

    @property
    def network(self) -> str:
        return "mainnet" if self.is_mainnet else "testnet"

    def serialize(self) -> bytes:
        return encode_transaction(self)

    @property
    def txid(self) -> str:
        return sha512_256(self.serialize()).hex()

    def signer_address(self, condition: SpendingCondition) -> str:
        return condition_address(condition, self.is_mainnet)

    @property
    def sender_address(self) -> str:
        return self.signer_address(self.auth.origin)

    @property
    def payload_kind(self) -> str:
        return payload_kind(self.payload)


def condition_address(condition: SpendingCondition, mainnet: bool) -> str:
    # As in stacks-core, only P2PKH maps to the single-sig version; every other hash mode
    # (P2WPKH included) is a "multisig" address version.
    single = condition.hash_mode == HashMode.P2PKH
    if mainnet:
        version = MAINNET_SINGLE_SIG if single else MAINNET_MULTI_SIG
    else:
        version = TESTNET_SINGLE_SIG if single else TESTNET_MULTI_SIG
    return address_from_hash160(version, condition.signer)


def payload_kind(payload: Payload) -> str:
    if isinstance(payload, TokenTransferPayload):
        return "token-transfer"
    if isinstance(payload, SmartContractPayload):
        return "smart-contract" if payload.clarity_version is None else "versioned-smart-contract"
    if isinstance(payload, ContractCallPayload):
        return "contract-call"
    if isinstance(payload, PoisonMicroblockPayload):
        return "poison-microblock"
    if isinstance(payload, TenureChangePayload):
        return "tenure-change"
    return {4: "coinbase", 5: "coinbase-to-alt-recipient", 8: "nakamoto-coinbase"}[
        payload.payload_type
    ]


# ----------------------------------------------------------------------------------- decoding


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def fail(self, message: str, at: int | None = None) -> TransactionDecodeError:
        return TransactionDecodeError(message, self.pos if at is None else at)

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise self.fail(f"truncated {what}: need {n} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def enum(self, allowed: Any, what: str) -> int:
        at = self.pos
        value = self.u8(what)
        if value not in allowed:
            raise self.fail(f"unknown {what} 0x{value:02x}", at)
        return value

    def clarity(self, what: str) -> ClarityValue:
        try:
            value, self.pos = clarity.decode_prefix(self.data, self.pos)
        except ClarityDecodeError as exc:
            raise TransactionDecodeError(f"bad Clarity value in {what}: {exc}", exc.offset) from exc
        return value

    def name(self, what: str, pattern: Any) -> str:
        at = self.pos
        n = self.u8(f"{what} length")
        text = self.take(n, what).decode("latin-1")
        if n > clarity.CLARITY_NAME_MAX or pattern.fullmatch(text) is None:
            raise self.fail(f"invalid {what} {text!r}", at)
        return text

    def contract_name(self) -> str:
        return self.name("contract name", clarity._CONTRACT_NAME_RE)

    def address(self, what: str) -> tuple[int, bytes]:
        at = self.pos
        version = self.u8(f"{what} version")
        if version >= 32:
            raise self.fail(f"{what} version {version} is not below 32", at)
        return version, self.take(20, f"{what} hash160")


def _spending_condition(r: _Reader) -> SpendingCondition:
    hash_mode = HashMode(r.enum({m.value for m in HashMode}, "hash mode"))
    signer = r.take(20, "signer hash160")
    nonce = r.uint(8, "nonce")
    fee = r.uint(8, "fee")
    if hash_mode in SINGLE_SIG_MODES:
        at = r.pos
        key_encoding = r.enum({KEY_COMPRESSED, KEY_UNCOMPRESSED}, "key encoding")
        if hash_mode == HashMode.P2WPKH and key_encoding != KEY_COMPRESSED:
            raise r.fail("P2WPKH requires a compressed key", at)
        signature = r.take(65, "signature")
        return SingleSigCondition(hash_mode, signer, nonce, fee, key_encoding, signature)
    count = r.uint(4, "auth field count")
    if count * 34 > len(r.data) - r.pos:
        raise r.fail(f"{count} auth fields cannot fit in the remaining input")
    fields = []
    for _ in range(count):
        at = r.pos
        kind = r.enum({0, 1, 2, 3}, "auth field type")
        if kind in (0, 1):
            key = r.take(33, "public key")
            if key[0] not in (2, 3):
                raise r.fail("auth field public key is not a compressed SEC1 key", at + 1)
            fields.append(AuthField(False, kind == 0, key))
        else:
            fields.append(AuthField(True, kind == 2, r.take(65, "signature")))
        if hash_mode in SEGWIT_MODES and not fields[-1].compressed:
            raise r.fail("uncompressed keys are not allowed in segwit hash modes", at)
    required = r.uint(2, "signatures required")
    return MultiSigCondition(hash_mode, signer, nonce, fee, tuple(fields), required)


def _pc_principal(r: _Reader) -> PostConditionPrincipal:
    kind = r.enum({1, 2, 3}, "post-condition principal type")
    if kind == 1:
        return PostConditionPrincipal("origin")
    version, h = r.address("post-condition principal")
    if kind == 2:
        return PostConditionPrincipal("standard", version, h)
    return PostConditionPrincipal("contract", version, h, r.contract_name())


def _asset(r: _Reader) -> AssetInfo:
    version, h = r.address("asset contract address")
    contract_name = r.contract_name()
    asset_name = r.name("asset name", clarity._CLARITY_NAME_RE)
    return AssetInfo(version, h, contract_name, asset_name)


def _post_condition(r: _Reader) -> PostCondition:
    kind = POST_CONDITION_KINDS[r.enum(POST_CONDITION_KINDS, "post-condition type")]
    principal = _pc_principal(r)
    if kind in ("stx", "staking"):
        code = r.enum(FUNGIBLE_CODES, "fungible condition code")
        return PostCondition(kind, principal, code, amount=r.uint(8, "amount"))
    if kind == "ft":
        asset = _asset(r)
        code = r.enum(FUNGIBLE_CODES, "fungible condition code")
        return PostCondition(kind, principal, code, amount=r.uint(8, "amount"), asset=asset)
    if kind == "nft":
        asset = _asset(r)
        asset_id = r.clarity("NFT post-condition asset id")
        code = r.enum(NFT_CODES, "NFT condition code")
        return PostCondition(kind, principal, code, asset=asset, asset_id=asset_id)
    return PostCondition(kind, principal, r.enum(POX_CODES, "PoX condition code"))


def _principal_value(r: _Reader, what: str) -> PrincipalCV:
    at = r.pos
    value = r.clarity(what)
    if not isinstance(value, clarity.StandardPrincipalCV | clarity.ContractPrincipalCV):
        raise r.fail(f"{what} must be a principal", at)
    return value


def _code_body(r: _Reader) -> str:
    at = r.pos
    n = r.uint(4, "code body length")
    raw = r.take(n, "code body")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise r.fail("code body is not valid UTF-8", at) from None


def _payload(r: _Reader) -> Payload:
    at = r.pos
    kind = r.u8("payload type")
    if kind == 0:
        recipient = _principal_value(r, "token transfer recipient")
        amount = r.uint(8, "amount")
        return TokenTransferPayload(recipient, amount, r.take(MEMO_LENGTH, "memo"))
    if kind == 1:
        return SmartContractPayload(r.contract_name(), _code_body(r))
    if kind == 6:
        version = r.enum(CLARITY_VERSIONS, "Clarity version")
        return SmartContractPayload(r.contract_name(), _code_body(r), version)
    if kind == 2:
        version, h = r.address("contract address")
        contract_name = r.contract_name()
        function_name = r.name("function name", clarity._CLARITY_NAME_RE)
        count = r.uint(4, "argument count")
        if count > len(r.data) - r.pos:
            raise r.fail(f"{count} arguments cannot fit in the remaining input")
        args = tuple(r.clarity(f"argument {i}") for i in range(count))
        return ContractCallPayload(version, h, contract_name, function_name, args)
    if kind == 3:
        header_1 = r.take(MICROBLOCK_HEADER_LENGTH, "microblock header")
        return PoisonMicroblockPayload(
            header_1, r.take(MICROBLOCK_HEADER_LENGTH, "microblock header")
        )
    if kind == 4:
        return CoinbasePayload(4, r.take(32, "coinbase"))
    if kind == 5:
        coinbase = r.take(32, "coinbase")
        return CoinbasePayload(5, coinbase, _principal_value(r, "coinbase recipient"))
    if kind == 8:
        coinbase = r.take(32, "coinbase")
        opt_at = r.pos
        opt = r.clarity("coinbase recipient")
        nakamoto_recipient: PrincipalCV | None = None
        if isinstance(opt, clarity.SomeCV) and isinstance(
            opt.value, clarity.StandardPrincipalCV | clarity.ContractPrincipalCV
        ):
            nakamoto_recipient = opt.value
        elif not isinstance(opt, clarity.NoneCV):
            raise r.fail("coinbase recipient must be (optional principal)", opt_at)
        return CoinbasePayload(8, coinbase, nakamoto_recipient, r.take(80, "VRF proof"))
    if kind == 7:
        return TenureChangePayload(
            r.take(20, "tenure consensus hash"),
            r.take(20, "previous tenure consensus hash"),
            r.take(20, "burn view consensus hash"),
            r.take(32, "previous tenure end"),
            r.uint(4, "previous tenure blocks"),
            r.enum(TENURE_CHANGE_CAUSES, "tenure change cause"),
            r.take(20, "pubkey hash"),
        )
    raise r.fail(f"unknown payload type 0x{kind:02x}", at)


# version, chain id, auth type, then a single-sig spending condition: hash mode, signer, nonce,
# fee, key encoding and the 65-byte signature (the head of almost every transaction).
_SINGLE_SIG_HEAD = struct.Struct(">BIBB20sQQB65s")
_SINGLE_SIG_CODES = frozenset(m.value for m in SINGLE_SIG_MODES)


def decode_transaction(data: bytes | bytearray | memoryview) -> Transaction:
    r = _Reader(bytes(data))
    head = _single_sig_head(r.data)
    if head is not None:
        # The common head in one unpack (an indexer decodes every stored transaction); any
        # other shape, or bytes the checks below would refuse, take the field-by-field path,
        # which reports the precise error.
        version, chain_id, auth_type, mode, signer, nonce, fee, key_encoding, signature = head
        hash_mode = HashMode(mode)
        origin: SpendingCondition = SingleSigCondition(
            hash_mode, signer, nonce, fee, key_encoding, signature
        )
        sponsor = None
        r.pos = _SINGLE_SIG_HEAD.size
    else:
        version = r.enum({TX_VERSION_MAINNET, TX_VERSION_TESTNET}, "transaction version")
        chain_id = r.uint(4, "chain id")
        auth_type = r.enum({AUTH_STANDARD, AUTH_SPONSORED}, "auth type")
        origin = _spending_condition(r)
        sponsor = _spending_condition(r) if auth_type == AUTH_SPONSORED else None
    anchor_mode = r.enum(ANCHOR_MODES, "anchor mode")
    pc_mode = r.enum(POST_CONDITION_MODES, "post-condition mode")
    count = r.uint(4, "post-condition count")
    if count * 3 > len(r.data) - r.pos:
        raise r.fail(f"{count} post-conditions cannot fit in the remaining input")
    post_conditions = tuple(_post_condition(r) for _ in range(count))
    payload = _payload(r)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes after the transaction")
    auth = Authorization(auth_type, origin, sponsor)
    return Transaction(version, chain_id, auth, anchor_mode, pc_mode, post_conditions, payload)


def _single_sig_head(data: bytes) -> tuple[Any, ...] | None:
    """The fields of a standard single-sig head that passes every check of the general path
    (known version, P2PKH or compressed P2WPKH), or None."""
    if len(data) < _SINGLE_SIG_HEAD.size:
        return None
    head = _SINGLE_SIG_HEAD.unpack_from(data)
    version, _, auth_type, mode, _, _, _, key_encoding, _ = head
    if (
        version in (TX_VERSION_TESTNET, TX_VERSION_MAINNET)
        and auth_type == AUTH_STANDARD
        and mode in _SINGLE_SIG_CODES
        and (key_encoding == KEY_COMPRESSED or (key_encoding == KEY_UNCOMPRESSED and mode == 0))
    ):
        return head
    return None


@dataclass(frozen=True, slots=True)
class TxSummary:
    """What an indexer keeps of a transaction beside its bytes: who sent it, what it called, and
    what it paid. `fee` is what the transaction pays: the sponsor's fee when it is sponsored
    (the origin's is then 0); `nonce` is the origin's. `contract_id` is the called contract, or
    the deployed one (`sender.name`); `function_name` is set for contract calls only."""

    sender: str
    contract_id: str | None
    function_name: str | None
    fee: int
    nonce: int


def summarize(tx: Transaction) -> TxSummary:
    origin = tx.auth.origin
    payer = tx.auth.sponsor or origin
    sender = tx.sender_address
    payload = tx.payload
    contract_id: str | None = None
    function_name: str | None = None
    if isinstance(payload, ContractCallPayload):
        contract_id, function_name = payload.contract, payload.function_name
    elif isinstance(payload, SmartContractPayload):
        contract_id = f"{sender}.{payload.contract_name}"
    return TxSummary(sender, contract_id, function_name, payer.fee, origin.nonce)


def decode_transaction_hex(text: str) -> Transaction:
    body = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        raw = bytes.fromhex(body)
    except ValueError:
        raise TransactionDecodeError(f"not a hex string: {text[:40]!r}", 0) from None
    return decode_transaction(raw)


# ----------------------------------------------------------------------------------- encoding


def _enc_condition(c: SpendingCondition, out: bytearray) -> None:
    out.append(c.hash_mode)
    out += c.signer
    out += c.nonce.to_bytes(8, "big")
    out += c.fee.to_bytes(8, "big")
    if isinstance(c, SingleSigCondition):
        out.append(c.key_encoding)
        out += c.signature
        return
    out += len(c.fields).to_bytes(4, "big")
    for f in c.fields:
        out.append((2 if f.is_signature else 0) + (0 if f.compressed else 1))
        out += f.data
    out += c.signatures_required.to_bytes(2, "big")


def _enc_name(name: str, out: bytearray) -> None:
    raw = name.encode("utf-8")
    out.append(len(raw))
    out += raw


def _enc_post_condition(pc: PostCondition, out: bytearray) -> None:
    out.append({v: k for k, v in POST_CONDITION_KINDS.items()}[pc.kind])
    p = pc.principal
    out.append({"origin": 1, "standard": 2, "contract": 3}[p.kind])
    if p.kind != "origin" and p.version is not None and p.hash160 is not None:
        out.append(p.version)
        out += p.hash160
        if p.contract_name is not None:
            _enc_name(p.contract_name, out)
    if pc.asset is not None:
        out.append(pc.asset.version)
        out += pc.asset.hash160
        _enc_name(pc.asset.contract_name, out)
        _enc_name(pc.asset.asset_name, out)
    if pc.asset_id is not None:
        out += clarity.encode(pc.asset_id)
    out.append(pc.condition_code)
    if pc.amount is not None:
        out += pc.amount.to_bytes(8, "big")


def _enc_payload(p: Payload, out: bytearray) -> None:
    if isinstance(p, TokenTransferPayload):
        out.append(0)
        out += clarity.encode(p.recipient)
        out += p.amount.to_bytes(8, "big")
        out += p.memo
    elif isinstance(p, SmartContractPayload):
        if p.clarity_version is None:
            out.append(1)
        else:
            out += bytes([6, p.clarity_version])
        _enc_name(p.contract_name, out)
        body = p.code_body.encode("utf-8")
        out += len(body).to_bytes(4, "big") + body
    elif isinstance(p, ContractCallPayload):
        out.append(2)
        out.append(p.address_version)
        out += p.address_hash160
        _enc_name(p.contract_name, out)
        _enc_name(p.function_name, out)
        out += len(p.args).to_bytes(4, "big")
        for arg in p.args:
            out += clarity.encode(arg)
    elif isinstance(p, PoisonMicroblockPayload):
        out.append(3)
        out += p.header_1 + p.header_2
    elif isinstance(p, CoinbasePayload):
        out.append(p.payload_type)
        out += p.coinbase
        if p.payload_type == 5 and p.alt_recipient is not None:
            out += clarity.encode(p.alt_recipient)
        elif p.payload_type == 8:
            rec = p.alt_recipient
            out += clarity.encode(clarity.NoneCV() if rec is None else clarity.SomeCV(rec))
            out += p.vrf_proof or b""
    else:
        out.append(7)
        out += p.tenure_consensus_hash + p.prev_tenure_consensus_hash
        out += p.burn_view_consensus_hash + p.previous_tenure_end
        out += p.previous_tenure_blocks.to_bytes(4, "big")
        out.append(p.cause)
        out += p.pubkey_hash


def encode_transaction(tx: Transaction) -> bytes:
    out = bytearray([tx.version])
    out += tx.chain_id.to_bytes(4, "big")
    out.append(tx.auth.auth_type)
    _enc_condition(tx.auth.origin, out)
    if tx.auth.sponsor is not None:
        _enc_condition(tx.auth.sponsor, out)
    out.append(tx.anchor_mode)
    out.append(tx.post_condition_mode)
    out += len(tx.post_conditions).to_bytes(4, "big")
    for pc in tx.post_conditions:
        _enc_post_condition(pc, out)
    _enc_payload(tx.payload, out)
    return bytes(out)


def txid(data: bytes) -> str:
    return sha512_256(data).hex()


# ----------------------------------------------------------------------------------- signatures


@dataclass(frozen=True, slots=True)
class SignerCheck:
    role: str  # "origin" or "sponsor"
    address: str  # the address the condition claims (from its signer hash)
    ok: bool
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    ok: bool
    signers: tuple[SignerCheck, ...]
    reason: str | None = None


class _BadSignature(Exception):
    pass


def _clear(c: SpendingCondition) -> SpendingCondition:
    if isinstance(c, SingleSigCondition):
        return dataclasses.replace(c, nonce=0, fee=0, signature=bytes(65))
    return dataclasses.replace(c, nonce=0, fee=0, fields=())


# The placeholder sponsor that the origin signs over, so that the sponsor can be chosen later.
_INITIAL_SPONSOR = SingleSigCondition(HashMode.P2PKH, bytes(20), 0, 0, KEY_COMPRESSED, bytes(65))


def initial_sighash(tx: Transaction) -> bytes:
    sponsor = None if tx.auth.sponsor is None else _INITIAL_SPONSOR
    cleared = dataclasses.replace(
        tx, auth=Authorization(tx.auth.auth_type, _clear(tx.auth.origin), sponsor)
    )
    return sha512_256(encode_transaction(cleared))


def _presign(sighash: bytes, auth_flag: int, fee: int, nonce: int) -> bytes:
    return sha512_256(
        sighash + bytes([auth_flag]) + fee.to_bytes(8, "big") + nonce.to_bytes(8, "big")
    )


def _recover(presign: bytes, signature: bytes, compressed: bool) -> bytes:
    recid = signature[0]
    if recid > 3:
        raise _BadSignature(f"recovery id {recid} is not 0..3")
    try:
        key = coincurve.PublicKey.from_signature_and_message(
            signature[1:] + bytes([recid]), presign, hasher=None
        )
    except Exception as exc:  # coincurve raises plain Exception/ValueError on bad signatures
        raise _BadSignature(f"public key recovery failed: {exc}") from None
    return key.format(compressed=compressed)


def _redeem_script(required: int, keys: list[bytes]) -> bytes:
    if not 1 <= required <= 16 or not 1 <= len(keys) <= 16:
        raise _BadSignature(f"unsupported multisig shape {required}-of-{len(keys)}")
    script = bytearray([0x50 + required])
    for key in keys:
        script.append(len(key))
        script += key
    script += bytes([0x50 + len(keys), 0xAE])  # OP_n OP_CHECKMULTISIG
    return bytes(script)


def signer_hash(hash_mode: HashMode, required: int, keys: list[bytes]) -> bytes:
    """The hash160 a spending condition's `signer` must equal for these public keys."""
    if hash_mode == HashMode.P2PKH:
        return hash160(keys[0])
    if hash_mode == HashMode.P2WPKH:
        return hash160(b"\x00\x14" + hash160(keys[0]))
    script = _redeem_script(required, keys)
    if hash_mode in (HashMode.P2SH, HashMode.P2SH_NON_SEQUENTIAL):
        return hash160(script)
    return hash160(b"\x00\x20" + sha256(script))


def _verify_condition(c: SpendingCondition, sighash: bytes, auth_flag: int) -> bytes:
    """Check one condition; return the sighash the next signer continues from."""
    if isinstance(c, SingleSigCondition):
        presign = _presign(sighash, auth_flag, c.fee, c.nonce)
        key = _recover(presign, c.signature, c.key_encoding == KEY_COMPRESSED)
        if signer_hash(c.hash_mode, 1, [key]) != c.signer:
            raise _BadSignature("recovered public key does not hash to the signer")
        return sha512_256(presign + bytes([c.key_encoding]) + c.signature)
    sequential = c.hash_mode not in NON_SEQUENTIAL_MODES
    current = sighash
    keys: list[bytes] = []
    signatures = 0
    for field in c.fields:
        if not field.is_signature:
            if field.compressed:
                keys.append(field.data)
            else:
                try:
                    keys.append(coincurve.PublicKey(field.data).format(compressed=False))
                except Exception:
                    raise _BadSignature("auth field public key is not on the curve") from None
            continue
        # Order-independent (SIP-027) signers all sign the same initial sighash.
        presign = _presign(current if sequential else sighash, auth_flag, c.fee, c.nonce)
        keys.append(_recover(presign, field.data, field.compressed))
        signatures += 1
        if sequential:
            encoding = KEY_COMPRESSED if field.compressed else KEY_UNCOMPRESSED
            current = sha512_256(presign + bytes([encoding]) + field.data)
    if sequential and signatures != c.signatures_required:
        raise _BadSignature(f"{signatures} signatures given, {c.signatures_required} required")
    if not sequential and signatures < c.signatures_required:
        raise _BadSignature(f"{signatures} signatures given, {c.signatures_required} required")
    if not keys:
        raise _BadSignature("multisig condition lists no keys")
    if signer_hash(c.hash_mode, c.signatures_required, keys) != c.signer:
        raise _BadSignature("public keys do not hash to the multisig signer")
    return current


def verify_signatures(tx: Transaction) -> SignatureCheck:
    """Walk the sighash chain: the origin signs the cleared transaction with the standard auth
    flag; a sponsor continues from the origin's resulting sighash with the sponsored flag."""
    checks: list[SignerCheck] = []
    sighash = initial_sighash(tx)
    steps: list[tuple[str, SpendingCondition, int]] = [("origin", tx.auth.origin, AUTH_STANDARD)]
    if tx.auth.sponsor is not None:
        steps.append(("sponsor", tx.auth.sponsor, AUTH_SPONSORED))
    for role, condition, flag in steps:
        address = tx.signer_address(condition)
        try:
            sighash = _verify_condition(condition, sighash, flag)
        except _BadSignature as exc:
            checks.append(SignerCheck(role, address, False, str(exc)))
            return SignatureCheck(False, tuple(checks), f"{role}: {exc}")
        checks.append(SignerCheck(role, address, True))
    return SignatureCheck(True, tuple(checks))


# ----------------------------------------------------------------------------------- JSON view


def _condition_json(c: SpendingCondition, mainnet: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "hash_mode": int(c.hash_mode),
        "hash_mode_name": c.hash_mode.name.lower().replace("_", "-"),
        "signer": c.signer.hex(),
        "signer_address": condition_address(c, mainnet),
        "nonce": str(c.nonce),
        "fee": str(c.fee),
    }
    if isinstance(c, SingleSigCondition):
        out["key_encoding"] = c.key_encoding
        out["signature"] = c.signature.hex()
    else:
        out["signatures_required"] = c.signatures_required
        out["fields"] = [
            {"kind": "signature" if f.is_signature else "public-key", "compressed": f.compressed}
            for f in c.fields
        ]
    return out


def post_condition_json(pc: PostCondition) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": pc.kind,
        "principal": str(pc.principal),
        "condition": pc.condition,
    }
    if pc.amount is not None:
        out["amount"] = str(pc.amount)
    if pc.asset is not None:
        out["asset"] = str(pc.asset)
    if pc.asset_id is not None:
        out["asset_id"] = clarity.to_json(pc.asset_id)
    return out


def payload_json(p: Payload) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": payload_kind(p)}
    if isinstance(p, TokenTransferPayload):
        out.update(recipient=str(p.recipient), amount=str(p.amount), memo_text=p.memo_text)
        out["memo"] = "0x" + p.memo.hex()
    elif isinstance(p, SmartContractPayload):
        out.update(contract_name=p.contract_name, code_body=p.code_body)
        if p.clarity_version is not None:
            out["clarity_version"] = p.clarity_version
    elif isinstance(p, ContractCallPayload):
        out.update(contract=p.contract, function_name=p.function_name)
        out["args"] = [clarity.to_json(a) for a in p.args]
    elif isinstance(p, PoisonMicroblockPayload):
        out.update(header_1="0x" + p.header_1.hex(), header_2="0x" + p.header_2.hex())
    elif isinstance(p, CoinbasePayload):
        out["coinbase"] = "0x" + p.coinbase.hex()
        if p.payload_type in (5, 8):
            out["alt_recipient"] = None if p.alt_recipient is None else str(p.alt_recipient)
        if p.payload_type == 8:
            out["vrf_proof"] = "0x" + (p.vrf_proof or b"").hex()
    else:
        out.update(
            tenure_consensus_hash="0x" + p.tenure_consensus_hash.hex(),
            prev_tenure_consensus_hash="0x" + p.prev_tenure_consensus_hash.hex(),
            burn_view_consensus_hash="0x" + p.burn_view_consensus_hash.hex(),
            previous_tenure_end="0x" + p.previous_tenure_end.hex(),
            previous_tenure_blocks=p.previous_tenure_blocks,
            cause=p.cause,
            pubkey_hash="0x" + p.pubkey_hash.hex(),
        )
    return out


def transaction_json(tx: Transaction, check: SignatureCheck | None = None) -> dict[str, Any]:
    """A JSON-ready description; `signature_valid` is included when `check` is given."""
    mainnet = tx.is_mainnet
    out: dict[str, Any] = {
        "txid": tx.txid,
        "version": tx.version,
        "network": tx.network,
        "chain_id": tx.chain_id,
        "auth_type": "standard" if tx.auth.auth_type == AUTH_STANDARD else "sponsored",
        "origin": _condition_json(tx.auth.origin, mainnet),
        "sponsor": None if tx.auth.sponsor is None else _condition_json(tx.auth.sponsor, mainnet),
        "anchor_mode": tx.anchor_mode,
        "post_condition_mode": tx.post_condition_mode,
        "post_conditions": [post_condition_json(pc) for pc in tx.post_conditions],
        "payload": payload_json(tx.payload),
    }
    if check is not None:
        out["signature_valid"] = check.ok
        out["signature_reason"] = check.reason
    return out
