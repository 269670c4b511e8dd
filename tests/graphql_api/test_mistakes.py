"""Client mistakes and floods, sentence by sentence of the hardening list (validation floods,
websocket frames, rate limits, client mistakes), against a real `recchain serve` process: each
is answered with a client error carrying a code (close 4400 on websockets), is refused before
the work it would cost, and changes nothing."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
import websockets
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    get_named_type,
)
from graphql.validation import ValidationContext

from graphql_api.schema import build_schema
from ops.bench import attacks
from tests.graphql_api.conftest import Api
from tests.graphql_api.livechain import LiveChain
from tests.graphql_api.test_hostile import api_process, start_api  # noqa: F401
from tests.graphql_api.wsclient import Subscriber

CLIENT_CODES = {
    "BAD_USER_INPUT",
    "BAD_REQUEST",
    "BLOCK_NOT_FOUND",
    "LIMIT_EXCEEDED",
    "GRAPHQL_PARSE_FAILED",
    "GRAPHQL_VALIDATION_FAILED",
}
NUL, SURROGATE = "a\u0000b", "\ud800"
SLOT = "@TEXT@"  # where a probe's text literal goes
OPERATORS = sorted(
    ("_not", "_gt", "_gte", "_lt", "_lte", "_in", "_not_in", "_contains", "_not_contains",
     "_contains_nocase", "_starts_with"),
    key=len, reverse=True,
)  # fmt: skip
# Valid values for arguments a probe must give besides the one it aims at.
DUMMY = {
    "Int": "1",
    "Float": "1.0",
    "Boolean": "true",
    "String": '"x"',
    "ID": '"x"',
    "BigInt": '"1"',
    "BigDecimal": '"1"',
    "DateTime": '"2025-01-01T00:00:00Z"',
    "Date": '"2025-01-01"',
}
SCHEMA = build_schema()._schema


def assert_client_error(body: Any, what: object) -> set[str]:
    assert isinstance(body, dict) and body.get("errors"), (what, body)
    codes = {(e.get("extensions") or {}).get("code") for e in body["errors"]}
    assert codes and codes <= CLIENT_CODES, (what, body["errors"])
    return codes  # type: ignore[return-value]


def _dummy(tp: Any) -> str:
    if isinstance(tp, GraphQLNonNull):
        return _dummy(tp.of_type)
    if isinstance(tp, GraphQLList):
        return "[]"
    if isinstance(tp, GraphQLEnumType):
        return next(iter(tp.values))
    if isinstance(tp, GraphQLInputObjectType):
        required = [
            f"{n}: {_dummy(f.type)}" for n, f in tp.fields.items() if is_required(f.type, f)
        ]
        return "{" + " ".join(required) + "}"
    return DUMMY[tp.name]


def is_required(tp: Any, field: Any) -> bool:
    return isinstance(tp, GraphQLNonNull) and getattr(field, "default_value", None) is None


def _texty(tp: Any) -> bool:
    named = get_named_type(tp)
    return isinstance(named, GraphQLScalarType) and named.name not in ("Int", "Float", "Boolean")


def text_slots(tp: Any, depth: int = 0) -> list[tuple[str, str]]:
    """Every way to put a text literal into an argument of type `tp`: (label, template) where
    the template holds SLOT for the literal; input objects one field at a time."""
    inner = tp.of_type if isinstance(tp, GraphQLNonNull) else tp
    if isinstance(inner, GraphQLList):
        return [(f"[{label}]", f"[{t}]") for label, t in text_slots(inner.of_type, depth)]
    if _texty(inner):
        return [("", SLOT)]
    if isinstance(inner, GraphQLInputObjectType) and depth < 1:
        out = []
        # Filters: every column plainly, and each operator on one column (one code path each).
        operators: set[str] = set()
        for name, field in inner.fields.items():
            op = next((o for o in OPERATORS if name.endswith(o)), "")
            if op and inner.name.endswith("Filter"):
                if op in operators:
                    continue
                operators.add(op)
            others = " ".join(
                f"{n}: {_dummy(f.type)}"
                for n, f in inner.fields.items()
                if n != name and is_required(f.type, f)
            )
            for label, t in text_slots(field.type, depth + 1):
                out.append((f".{name}{label}", "{" + f"{name}: {t} {others}" + "}"))
        return out
    return []


def selection(tp: Any) -> str:
    named = get_named_type(tp)
    return " { __typename }" if isinstance(named, GraphQLObjectType) else ""


def text_argument_probes(root: GraphQLObjectType, keyword: str) -> list[tuple[str, str]]:
    """A document per text slot of every argument of every field reachable from `root` (root
    fields and the fields of the types they return, one level down): (label, document with
    SLOT where the literal goes)."""
    probes = []
    # A field of an input type is probed once, through the first argument of that type.
    probed: set[tuple[str, str]] = set()

    def field_probes(path: list[tuple[str, str]], tp: GraphQLObjectType, levels: int) -> None:
        for fname, field in tp.fields.items():
            if fname.startswith("__"):
                continue
            for aname, arg in field.args.items():
                others = [
                    f"{n}: {_dummy(a.type)}"
                    for n, a in field.args.items()
                    if n != aname and isinstance(a.type, GraphQLNonNull)
                ]
                arg_type = get_named_type(arg.type).name
                for label, template in text_slots(arg.type):
                    if label and (arg_type, label) in probed:
                        continue
                    probed.add((arg_type, label))
                    call = f"{fname}({' '.join([f'{aname}: {template}', *others])})"
                    doc = call + selection(field.type)
                    for _, pcall in reversed(path):
                        doc = f"{pcall} {{ {doc} }}"
                    where = ".".join([p for p, _ in path] + [f"{fname}({aname}{label})"])
                    probes.append((where, f"{keyword} {{ {doc} }}"))
            named = get_named_type(field.type)
            if levels and isinstance(named, GraphQLObjectType):
                required = [
                    f"{n}: {_dummy(a.type)}"
                    for n, a in field.args.items()
                    if isinstance(a.type, GraphQLNonNull)
                ]
                call = f"{fname}({' '.join(required)})" if required else fname
                field_probes([*path, (fname, call)], named, levels - 1)

    field_probes([], root, 1)
    return probes


def literal(text: str) -> str:
    # json.dumps escapes NUL as \u0000 and a lone surrogate as \ud800, as GraphQL reads them.
    return json.dumps(text)


# -- 8. client mistakes --------------------------------------------------------------------


@pytest.fixture
def unlimited_api(start_api: Any) -> attacks.Server:  # noqa: F811
    return start_api(RECCHAIN_API__RATE_LIMIT_PER_MINUTE="1000000")


async def test_nul_or_a_lone_surrogate_in_any_text_argument_is_a_client_error(
    unlimited_api: attacks.Server,
) -> None:
    api = unlimited_api
    probes = text_argument_probes(SCHEMA.query_type, "query")
    assert assert_probes_cover(probes)
    async with attacks.client(attacks.source(40), api.url) as c:
        for where, doc in probes:
            for text in (NUL, SURROGATE):
                query = doc.replace(SLOT, literal(text))
                body = json.dumps({"query": query}).encode()
                r = await c.post(
                    "/graphql", content=body, headers={"content-type": "application/json"}
                )
                assert r.status_code < 500, (where, r.text[:300])
                assert_client_error(r.json(), (where, text))


def assert_probes_cover(probes: list[tuple[str, str]]) -> bool:
    """The probes reach root arguments, filter fields and arguments of nested fields."""
    where = [w for w, _ in probes]
    wanted = ("holdings(owner)", "certificates(where.owner)", "_meta(block.hash)", "search(text)")
    nested = any("." in w.split("(")[0] for w in where)
    return all(w in where for w in wanted) and nested and len(where) > 150


async def test_nul_or_a_lone_surrogate_in_a_subscription_argument_is_an_error_message(
    api_process: attacks.Server,  # noqa: F811
) -> None:
    probes = text_argument_probes(SCHEMA.subscription_type, "subscription")
    assert {w.split("(")[0] for w, _ in probes} >= {"blocks", "listingUpdates", "relayStatus"}
    ws = await attacks._ws(api_process, attacks.source(41))
    try:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        for i, (where, doc) in enumerate(probes):
            for j, text in enumerate((NUL, SURROGATE)):
                op = f"{i}-{j}"
                query = doc.replace(SLOT, literal(text))
                frame = {"id": op, "type": "subscribe", "payload": {"query": query}}
                await ws.send(json.dumps(frame))
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                assert reply["id"] == op, reply
                if reply["type"] == "next":
                    assert_client_error(reply["payload"], where)
                    done = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    assert done["type"] == "complete", done
                else:
                    assert reply["type"] == "error", (where, reply)
                    assert_client_error({"errors": reply["payload"]}, where)
    finally:
        await ws.close()


FIRST_DOCS = [
    "query($n: Int!) { certificates(first: $n) { nodes { tokenId } } }",
    "query($n: Int!) { facility(id: 1) { certificates(first: $n) { nodes { tokenId } } } }",
    "query($n: Int!) { ownershipHistory(tokenId: 1, first: $n) { nodes { kind } } }",
    'query($n: Int!) { search(text: "solar", first: $n) { kind } }',
]


async def test_a_first_that_is_not_a_usable_int_is_a_client_error(
    api_process: attacks.Server,  # noqa: F811
    db_url: str,
) -> None:
    chain = LiveChain(db_url)  # facility 1 and token 1 exist: their relations are resolved
    await chain.add(chain.setup_and_mint(tokens=2))
    bad_variables: list[Any] = ["many", [1], 1.5, 2**31, 10**30, -1, None, {"n": 1}, True, "1"]
    bad_literals = ['"x"', "1.5", "2147483648", "-1", "null", "[1]", "{n: 1}", "true", "$m"]
    async with attacks.client(attacks.source(42), api_process.url) as c:
        for doc in FIRST_DOCS:
            for value in bad_variables:
                r = await c.post("/graphql", json={"query": doc, "variables": {"n": value}})
                assert r.status_code < 500, (doc, value, r.text)
                assert_client_error(r.json(), (doc, value))
            for lit in bad_literals:
                query = doc.split(") ", 1)[1].replace("$n", lit)
                r = await c.post("/graphql", json={"query": "query " + query})
                assert r.status_code < 500, (query, r.text)
                assert_client_error(r.json(), query)
            # The same over GET.
            r = await c.get(
                "/graphql",
                params={"query": doc, "variables": json.dumps({"n": "many"})},
                headers={"accept": "application/json"},
            )
            assert r.status_code < 500, r.text
            assert_client_error(r.json(), ("GET", doc))


async def test_a_where_nested_2000_deep_is_a_client_error_in_every_form(
    api_process: attacks.Server,  # noqa: F811
) -> None:
    deep_literal = "{and: [" * 2000 + "{}" + "]}" * 2000
    deep_or = "{or: [" * 2000 + "{tokenId: 1}" + "]}" * 2000
    deep_nested = "{facility_: " * 2000 + "{}" + "}" * 2000
    # Deeper than Python's json module encodes: written out as bytes.
    deep_var = b'{"and": [' * 2000 + b"{}" + b"]}" * 2000
    bodies = [
        json.dumps({"query": f"{{ certificates(where: {w}) {{ totalCount }} }}"}).encode()
        for w in (deep_literal, deep_or, deep_nested)
    ]
    bodies.append(
        b'{"query": "query($w: CertificateFilter) { certificates(where: $w) { totalCount } }",'
        b' "variables": {"w": ' + deep_var + b"}}"
    )
    # Within the document limits, still deeper than the filter compiler goes.
    shallow = "{and: [" * 8 + "{}" + "]}" * 8
    bodies.append(json.dumps({"query": f"{{ certificates(where: {shallow}) {{ totalCount }} }}"})
                  .encode())  # fmt: skip
    async with attacks.client(attacks.source(43), api_process.url) as c:
        for body in bodies:
            r = await c.post("/graphql", content=body, headers={"content-type": "application/json"})
            assert r.status_code < 500, r.text[:300]
            assert_client_error(r.json(), body[:60])
            if deep_var in body:  # deeper than the decoder goes: said so, not "not JSON"
                assert r.status_code == 400 and "nests deeper" in r.text, r.text
        # And as a subscription filter.
        ws = await attacks._ws(api_process, attacks.source(43))
        try:
            await ws.send(json.dumps({"type": "connection_init"}))
            await ws.recv()
            for i, w in enumerate((deep_literal, "{and: [" * 8 + "{}" + "]}" * 8)):
                sub = f"subscription {{ listingUpdates(where: {w}) {{ kind }} }}"
                await ws.send(
                    json.dumps({"id": str(i), "type": "subscribe", "payload": {"query": sub}})
                )
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                errors = (
                    reply["payload"] if reply["type"] == "error" else reply["payload"]["errors"]
                )
                assert_client_error({"errors": errors}, w[:30])
        finally:
            await ws.close()


async def test_undecodable_text_is_a_client_error_on_every_path(
    api_process: attacks.Server,  # noqa: F811
) -> None:
    async with attacks.client(attacks.source(44), api_process.url) as c:
        for content in (
            b'{"query": "{ __typename \xff }"}',
            b'{"query": "{ holdings(owner: \\"\xc3\\") { totalWh } }"}',
            b'\xef\xbb\xbf{"query": "{ __typename }"}\xff',
            b'{"query": "{ __typename }", "variables": {"v": "\xed\xa0\x80"}}',
        ):
            r = await c.post(
                "/graphql", content=content, headers={"content-type": "application/json"}
            )
            assert r.status_code in (200, 400), (content, r.text)
            assert_client_error(r.json(), content)
        # A query string that is not UTF-8 once percent-decoded.
        r = await c.get(
            "/graphql?query=%7B%20__typename%20%FF%7D", headers={"accept": "application/json"}
        )
        assert r.status_code < 500, r.text
        assert_client_error(r.json(), "GET %FF")
        r = await c.get("/retirement-statement.csv?beneficiary=%FF%00&reportingYear=2025")
        assert r.status_code in (400, 422), r.text
    # Over a websocket: a text frame must be UTF-8 (the protocol closes with 1007); a binary
    # frame that is not is a malformed message (4400).
    for frame, code in ((b'{"type": "connection_init"}\xff', 4400), (b"\xff\xfe", 4400)):
        ws = await attacks._ws(api_process, attacks.source(44))
        await ws.send(json.dumps({"type": "connection_init"}))
        await ws.recv()
        await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == code, frame


async def test_a_subscription_over_http_is_a_bad_request(
    api_process: attacks.Server,  # noqa: F811
) -> None:
    sub = "subscription { blocks { block { height } } }"
    async with attacks.client(attacks.source(45), api_process.url) as c:
        answers = [
            await c.get("/graphql", params={"query": sub}, headers={"accept": "application/json"}),
            await c.post("/graphql", json={"query": sub}),
            await c.post(
                "/graphql", json={"query": "query Q { __typename } " + sub, "operationName": None}
            ),
            await c.post("/graphql", json=[{"query": sub}]),
        ]
    for r in answers:
        assert r.status_code in (200, 400), r.text
        codes = assert_client_error(r.json(), r.request.url)
        assert codes & {"BAD_REQUEST", "GRAPHQL_VALIDATION_FAILED"}, r.text


async def test_websocket_frames_that_are_not_messages_are_closed_with_4400(
    api_process: attacks.Server,  # noqa: F811
) -> None:
    frames = ["[]", "1", '"x"', "null", "true", '{"type": 5}', '{"type": null}', "{", "",
              '{"id": "1", "type": "subscribe"}', '{"id": "1", "type": "subscribe", "payload": 1}',
              '{"id": {}, "type": "subscribe", "payload": {"query": "{ __typename }"}}',
              '{"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }",'
              ' "variables": []}}',
              '{"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }",'
              ' "operationName": 5}}']  # fmt: skip
    for frame in frames:
        ws = await attacks._ws(api_process, attacks.source(46))
        await ws.send(json.dumps({"type": "connection_init"}))
        await ws.recv()
        await ws.send(frame)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:  # a legal frame could be answered first; a bad one is closed
                await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400, frame
    # Before the handshake too (legacy protocol).
    ws = await websockets.connect(
        api_process.url.replace("http", "ws") + "/graphql",
        subprotocols=[websockets.Subprotocol("graphql-ws")],
        local_addr=(attacks.source(46), 0),
    )
    await ws.send("[1, 2]")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400


# -- 6. websocket frames -------------------------------------------------------------------


async def test_websocket_frames_and_http_bodies_share_one_bound(
    start_api: Any,  # noqa: F811
) -> None:
    bound = 20_000
    api = start_api(RECCHAIN_API__MAX_BODY_BYTES=str(bound))

    def message(size: int) -> str:
        head = json.dumps({"id": "1", "type": "subscribe", "payload": {"query": "{ __typename }"}})
        # Padding inside the JSON object keeps the frame a valid message.
        pad = size - len(head) - len(', "p": ""')
        return head[:-1] + ', "p": "' + "x" * pad + '"}'

    for size, closes in ((bound - 100, False), (bound, False), (bound + 1, True)):
        frame = message(size)
        assert len(frame.encode()) == size
        ws = await attacks._ws(api, attacks.source(47), max_size=None)
        try:
            await ws.send(json.dumps({"type": "connection_init"}))
            await ws.recv()
            await ws.send(frame)
            if closes:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            else:
                reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert reply["type"] == "next", reply
        finally:
            await ws.close()
        async with attacks.client(attacks.source(47), api.url) as c:
            body = json.dumps({"query": "{ __typename }", "p": "x" * (size - 40)}).encode()
            body = body[:-2] + b"x" * (size - len(body)) + b'"}'
            assert len(body) == size
            r = await c.post("/graphql", content=body, headers={"content-type": "application/json"})
            assert (r.status_code == 413) == closes, (size, r.status_code, r.text[:200])


async def test_a_refused_subscribe_is_answered_once_and_never_logged_again_per_block(
    start_api: Any,  # noqa: F811
    db_url: str,
) -> None:
    api = start_api(RECCHAIN_API__MAX_TOKENS="200", RECCHAIN_LOG_LEVEL="DEBUG")
    chain = LiveChain(db_url)
    await chain.add([])
    marker = uuid.uuid4().hex
    refused = [
        # oversized: more tokens than max_tokens
        "subscription { blocks { block { height } } } " + f"# {marker}\n" + "query Q { a } " * 80,
        f'subscription {{ blocks(afterHash: "{marker}\u0000") {{ block {{ height }} }} }}',
        f"subscription {{ listingUpdates(where: {{seller_{marker}: 1}}) {{ kind }} }}",
        f"subscription {{ blocks {{ {marker} }} }}",
        "subscription { listingUpdates(where: "
        + "{and: [" * 8
        + "{}"
        + "]}" * 8
        + ") { kind } }"
        + f" # {marker}",
    ]
    sub = await Subscriber.connect(api.url.replace("http", "ws") + "/graphql")
    try:
        for query in refused:
            await sub.subscribe(query)
            reply = await sub.next()
            errors = reply["payload"] if reply.get("type") == "error" else reply.get("errors")
            assert_client_error({"errors": errors}, query[:60])
            if reply.get("type") != "error":
                assert (await sub.next())["type"] == "complete"
        live = await sub.subscribe("subscription { blocks { block { height } } }")
        await asyncio.sleep(0.5)

        def refusal_lines() -> list[str]:
            # At DEBUG the server logs client errors and every frame it sends (uvicorn).
            ids = tuple(f'{{"id":"{i}"' for i in range(1, len(refused) + 1))
            return [
                line
                for line in api.log_path.read_text().splitlines()
                if marker in line or "client error" in line or "ERROR" in line
                or any(i in line for i in ids)
            ]  # fmt: skip

        before = refusal_lines()
        assert before, "the refusals are visible in the log"
        for _ in range(5):
            block = await chain.add([])
            frame = {"type": "ping"}
            while frame["type"] in ("ping", "pong", "ka"):  # keep-alives may come between
                frame = json.loads(await asyncio.wait_for(sub.ws.recv(), 20))
            # Only the valid operation is pushed: the refused ones were never topics.
            assert frame["id"] == live and frame["type"] == "next", frame
            height = frame["payload"]["data"]["blocks"]["block"]["height"]
            assert height == block["block_height"], frame
        # And nothing about them was logged again.
        assert refusal_lines() == before
    finally:
        await sub.close()


# -- 5. validation floods ------------------------------------------------------------------


async def test_an_oversized_document_is_refused_with_a_code_before_any_validation(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    contexts = [0]
    real_init = ValidationContext.__init__

    def counting(self: Any, *args: Any, **kw: Any) -> None:
        contexts[0] += 1
        real_init(self, *args, **kw)

    monkeypatch.setattr(ValidationContext, "__init__", counting)
    # A valid unique document is validated (the counter sees validation when it happens).
    body = await api.query(f"query V{uuid.uuid4().hex} {{ __typename }}")
    assert "errors" not in body and contexts[0] >= 1
    refused = [
        ("max_selections", f"query Q{{}} {{ {'__typename ' * 1400} }}"),
        ("max_selections", f"query Q{{}} {{ {'a: __typename ' * 30}{'__typename ' * 600} }}"),
        ("max_tokens", f"query Q{{}} {{ {'__typename(a: 1) ' * 400} }}"),
    ]
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as c:
        for limit, template in refused:
            for via in ("post", "get", "ws"):
                contexts[0] = 0
                query = template.replace("{}", uuid.uuid4().hex, 1)
                if via == "post":
                    body = (await c.post("/graphql", json={"query": query})).json()
                elif via == "get":
                    r = await c.get(
                        "/graphql", params={"query": query}, headers={"accept": "application/json"}
                    )
                    body = r.json()
                else:
                    sub = await Subscriber.connect(api.ws_url)
                    await sub.subscribe(query)
                    reply = await sub.next()
                    await sub.close()
                    body = {"errors": reply.get("payload") or reply.get("errors")}
                assert body["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED", (via, body)
                if limit == "max_selections":
                    assert body["errors"][0]["extensions"]["limit"] == limit, body
                assert contexts[0] == 0, (via, limit)
