"""Property-based tests (hypothesis): any id the service could issue, any payload, any URL form.

1. End to end: for an arbitrary connection id of the shape the service issues (15 of
   [A-Za-z0-9_-] then '=', typed raw, encoded or partly encoded) and an arbitrary payload up to
   131072 bytes, the local gateway (handing out that id) accepts wsconn's signature and the
   WebSocket client receives exactly those bytes: a text frame when they are valid UTF-8, else a
   binary frame.
2. The URL parser: every form of a connection URL (execute-api host, custom domain with a base
   path, loopback with a port; https/http/wss/ws; '@' or '%40'; id raw, encoded or partly
   encoded, any hex case) gives the same endpoint and decoded id, and `Target.url` is canonical
   and a fixed point of the parser.
3. boto3's `post_to_connection` and wsconn address the same connection for any id.

The rule for an id typed bare (not in a URL), as `decode_connection_id` documents: it is taken
as typed unless it holds a `%XX` escape, in which case it is percent-decoded once. So a bare id
is typed raw only when it has no `%XX` and no `://` (which makes it a URL); otherwise it is typed
with at least its '%' (and the ':' of '://') percent-encoded. Ids starting with '-' that are not
of the real shape (which wsconn takes bare) are typed after `--`.

Each gateway test runs one gateway for all of its examples (started in the test body, so no
function-scoped fixture is shared between examples); `database=None` keeps hypothesis from
writing an example database into the working tree.
"""

from __future__ import annotations

import random
import re
import string
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from tests.conftest import run_wsconn
from tests.gateway_util import management_client
from wsconn.endpoint import (
    encode_connection_id,
    parse_connection_url,
    parse_endpoint,
    resolve_target,
)
from wsconn.errors import UsageError
from wsconn.local.gateway import GatewayConfig, GatewayThread

MAX_PAYLOAD = 131072
WAIT = 10.0  # only reached when something is broken

GATEWAY_SETTINGS = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
OFFLINE_SETTINGS = settings(deadline=None, database=None)

# -- connection ids -------------------------------------------------------------------------

REAL_ALPHABET = string.ascii_letters + string.digits + "_-"
PRINTABLE = "".join(chr(code) for code in range(0x20, 0x7F))
# Characters and sequences that need care in a path, a URL or on a command line.
AWKWARD = list("+/=%@?#&:;~.!$'()*,[]\\^`{|}\" -_")
AWKWARD_RUNS = ["%3D", "%2f", "%25", "%41", "%zz", "%", "://", "@connections", "..", "--"]
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_DASH_ID = re.compile(r"-[A-Za-z0-9_-]{14}=")

real_ids = st.text(alphabet=REAL_ALPHABET, min_size=15, max_size=15).map(lambda s: s + "=")
wide_ids = (
    st.lists(
        st.one_of(
            st.sampled_from(PRINTABLE),
            st.sampled_from(AWKWARD),
            st.sampled_from(AWKWARD_RUNS),
        ),
        min_size=1,
        max_size=40,
    )
    .map("".join)
    .map(lambda s: s.strip(" ")[:64].strip(" ") or "~")
)
# Short ids of the most awkward characters: dot segments, a lone '%', '/' and the like.
short_awkward_ids = st.text(alphabet=".~%/-=+", min_size=1, max_size=3)
# What wsconn takes as an id: 1..128 of A-Z a-z 0-9 _ - + / = (the gateway issues only real_ids).
ACCEPTED_ALPHABET = string.ascii_letters + string.digits + "_-+/="
accepted_ids = st.text(alphabet=ACCEPTED_ALPHABET, min_size=1, max_size=128).filter(
    lambda text: text != "null"  # refused: what jq -r prints for a missing field
)
# For the URL parser alone, which takes any id and leaves refusing it to check_connection_id.
connection_ids = st.one_of(real_ids, accepted_ids, wide_ids, short_awkward_ids)


def _escape(char: str, upper: bool) -> str:
    hex_code = f"{ord(char):02X}"
    return "%" + (hex_code if upper else hex_code.lower())


@st.composite
def typed_in_url(draw: st.DrawFn, connection_id: str) -> str:
    """The id as someone may write it inside a connection URL: raw, encoded, or partly encoded.

    '/', '?', '#' and '%' are always escaped (they would end the id, start a query or fragment,
    or start an escape); any other character may be raw or escaped, in either hex case.
    """
    form = draw(st.sampled_from(["canonical", "full", "partial", "raw"]))
    if form == "canonical":
        return encode_connection_id(connection_id)
    must = set("/?#%")
    if form == "raw" and not must & set(connection_id):
        return connection_id
    out = []
    for char in connection_id:
        escaped = form == "full" or char in must or draw(st.booleans())
        out.append(_escape(char, draw(st.booleans())) if escaped else char)
    return "".join(out)


@st.composite
def typed_bare(draw: st.DrawFn, connection_id: str) -> str:
    """The id as someone may type it alone: raw when that is unambiguous, else escaped.

    A typed id holding a '%XX' escape is decoded once, so '%' is escaped whenever the id is not
    typed raw; '://' would make it a URL, so its ':' is escaped.
    """
    can_be_raw = not _ESCAPE.search(connection_id) and "://" not in connection_id
    if can_be_raw and draw(st.booleans()):
        return connection_id
    out = []
    for char in connection_id:
        escaped = char == "%" or draw(st.booleans())
        out.append(_escape(char, draw(st.booleans())) if escaped else char)
    typed = "".join(out)
    typed = typed.replace("://", _escape(":", draw(st.booleans())) + "//")
    assert typed == connection_id or _ESCAPE.search(typed), typed
    return typed


@st.composite
def typed_targets(draw: st.DrawFn, connection_id: str) -> tuple[str, str]:
    """("bare", the id as typed) or ("url", "{@ or %40}connections/{the id as typed in a URL}")."""
    if draw(st.booleans()):
        return "bare", draw(typed_bare(connection_id))
    marker = draw(st.sampled_from(["@", "%40"]))
    return "url", f"{marker}connections/{draw(typed_in_url(connection_id))}"


def bare_argv(typed: str) -> list[str]:
    """How the typed id goes on the command line: after '--' if Click would see an option."""
    if typed.startswith("-") and not _DASH_ID.fullmatch(typed):
        return ["--", typed]
    return [typed]


# -- payloads -------------------------------------------------------------------------------

_TEXT_POOL = 'abcxyz {}[]":,\n\t0123456789éüß€✓中文😀\U0010fffd\u2028\ufeff'


@st.composite
def generated_payloads(draw: st.DrawFn) -> bytes:
    """Up to 128 KiB from a seed (too big for hypothesis to draw byte by byte); sizes skewed."""
    size = draw(
        st.one_of(
            st.integers(0, 64),
            st.integers(0, 8192),
            st.integers(0, MAX_PAYLOAD),
            st.sampled_from([32767, 32768, 32769, 65536, MAX_PAYLOAD - 1, MAX_PAYLOAD]),
        )
    )
    kind = draw(st.sampled_from(["random-bytes", "utf8-text", "ascii", "text-with-a-bad-byte"]))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    if kind == "random-bytes":
        return rng.randbytes(size)
    if kind == "ascii":
        return "".join(rng.choices(string.printable, k=size)).encode()
    text = "".join(rng.choices(_TEXT_POOL, k=size)).encode()[:size]
    text = text.decode("utf-8", "ignore").encode()  # cut at a character boundary
    if kind == "text-with-a-bad-byte" and text:
        at = rng.randrange(len(text))
        text = text[:at] + rng.choice([b"\xff", b"\xc0", b"\x80", b"\xed\xa0\x80"]) + text[at:]
        text = text[:MAX_PAYLOAD]
    return text


payloads = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=150).map(lambda s: s.encode("utf-8")),
    generated_payloads(),
)


def expected_frame(payload: bytes) -> str | bytes:
    """What a WebSocket client receives: text when the bytes are valid UTF-8, else binary."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload


# -- one gateway for all examples, handing out the id each example chooses ------------------


class IdGateway:
    """A local gateway whose next connection gets `next_id`, with a waitable event log."""

    def __init__(self) -> None:
        self.next_id = "unset"
        self._events: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self.thread = GatewayThread(
            GatewayConfig(port=0, id_factory=lambda: self.next_id), on_event=self._record
        )

    def _record(self, event: dict[str, Any]) -> None:
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    @property
    def endpoint(self) -> str:
        return self.thread.endpoint

    def mark(self) -> int:
        with self._changed:
            return len(self._events)

    def events_since(self, mark: int, name: str) -> list[dict[str, Any]]:
        with self._changed:
            return [e for e in self._events[mark:] if e["event"] == name]

    def wait_for(self, mark: int, name: str, **match: object) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for event in self._events[mark:]:
                if event["event"] == name and all(event.get(k) == v for k, v in match.items()):
                    return event
            return None

        with self._changed:
            found = self._changed.wait_for(find, timeout=WAIT)
        assert found is not None, f"no {name} event matching {match}: {self._events[mark:]}"
        return found

    @contextmanager
    def client(self, connection_id: str) -> Iterator[ClientConnection]:
        """A WebSocket client the gateway knows as `connection_id`; gone again afterwards."""
        self.next_id = connection_id
        mark = self.mark()
        try:
            with connect(self.thread.ws_url, open_timeout=WAIT) as ws:
                event = self.wait_for(mark, "connect")
                assert event["connectionId"] == connection_id
                yield ws
        finally:
            # The next example may reuse this id: wait until the gateway has let it go.
            self.wait_for(mark, "disconnect", connectionId=connection_id)


@contextmanager
def id_gateway() -> Iterator[IdGateway]:
    gateway = IdGateway()
    with gateway.thread:
        yield gateway


# -- 1. any id, any payload: signature accepted, exactly those bytes delivered ---------------


def test_any_id_and_payload_arrive_exactly() -> None:
    with id_gateway() as gw, tempfile.TemporaryDirectory() as scratch:
        message_file = Path(scratch) / "message.bin"

        @settings(GATEWAY_SETTINGS, max_examples=100)
        @given(
            case=real_ids.flatmap(lambda cid: st.tuples(st.just(cid), typed_targets(cid))),
            payload=payloads,
            channel=st.sampled_from(["-d @-", "-d @FILE", "piped stdin"]),
        )
        @example(
            case=("-R0oXAdfD0kwCH6=", ("bare", "-R0oXAdfD0kwCH6=")),
            payload=b"\xff" * MAX_PAYLOAD,
            channel="-d @FILE",
        )
        @example(
            case=("ab-c_dEFg000001=", ("bare", "ab-c_dEFg000001%3D")),
            payload=b"",
            channel="-d @-",
        )
        @example(
            case=("ab-c_dEFg000001=", ("url", "%40connections/ab%2Dc_dEFg000001%3d")),
            payload="✓".encode() * 40000,
            channel="piped stdin",
        )
        def check(case: tuple[str, tuple[str, str]], payload: bytes, channel: str) -> None:
            connection_id, (typed_as, typed) = case
            frame = "text" if isinstance(expected_frame(payload), str) else "binary"
            note_event(f"typed {typed_as}, via {channel}, {frame} frame")
            note_event(f"payload size: {'>= 32 KiB' if len(payload) >= 32768 else '< 32 KiB'}")
            if typed_as == "bare":
                target = bare_argv(typed)
                options = ["--endpoint", gw.endpoint]
            else:
                target = [f"{gw.endpoint}/{typed}"]
                options = []
            stdin: bytes | None = payload
            if channel == "-d @FILE":
                message_file.write_bytes(payload)
                options += ["-d", f"@{message_file}"]
                stdin = None
            elif not payload:  # zero bytes on stdin is refused; '' typed is the empty message
                options += ["-d", ""]
                stdin = None
            elif channel == "-d @-":
                options += ["-d", "@-"]

            with gw.client(connection_id) as ws:
                mark = gw.mark()
                run = run_wsconn("send", *options, *target, input=stdin)
                assert run.code == 0, (run.code, run.stderr)
                got = ws.recv(timeout=WAIT)
                post = gw.wait_for(mark, "post")
                assert post["connectionId"] == connection_id
                assert post["status"] == 200
                assert post["bytes"] == len(payload)
                assert got == expected_frame(payload)
                assert gw.events_since(mark, "denied") == []  # accepted at the first attempt

        check()


# -- 2. the URL parser: every form, one endpoint and one id; Target.url is a fixed point -----

REGIONS = ["us-east-1", "eu-west-2", "ap-southeast-1", "us-gov-west-1", "cn-north-1"]
SEGMENT_CHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:"
segments = st.text(alphabet=SEGMENT_CHARS, min_size=1, max_size=12).filter(
    lambda s: s not in {".", ".."}
)


def _mixed_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


@st.composite
def endpoints(draw: st.DrawFn) -> tuple[str, tuple[str, str, str], str | None]:
    """(an endpoint URL as typed, its canonical (scheme, netloc, base path), its region)."""
    kind = draw(st.sampled_from(["execute-api", "custom-domain", "loopback"]))
    region: str | None = None
    if kind == "execute-api":
        api = draw(
            st.text(alphabet=string.ascii_lowercase + string.digits, min_size=10, max_size=10)
        )
        region = draw(st.sampled_from(REGIONS))
        suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
        host = f"{api}.execute-api.{region}.{suffix}"
        base = [draw(segments)]
        typed_scheme = draw(st.sampled_from(["https", "wss"]))
    elif kind == "custom-domain":
        labels = draw(
            st.lists(
                st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8),
                min_size=2,
                max_size=4,
            )
        )
        host = ".".join(labels)
        base = draw(st.lists(segments, min_size=0, max_size=3))
        typed_scheme = draw(st.sampled_from(["https", "wss", "http", "ws"]))
    else:
        host = draw(st.sampled_from(["127.0.0.1", "localhost", "[::1]"]))
        base = [draw(segments)]
        typed_scheme = draw(st.sampled_from(["http", "ws", "https", "wss"]))
    scheme = {"https": "https", "wss": "https", "http": "http", "ws": "http"}[typed_scheme]
    default_port = 443 if scheme == "https" else 80
    port = draw(st.one_of(st.none(), st.just(default_port), st.integers(1, 65535)))
    if kind == "loopback" and port is None:
        port = draw(st.integers(1024, 65535))
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    typed_host = _mixed_case(draw, host)
    typed_netloc = typed_host if port is None else f"{typed_host}:{port}"
    typed_scheme = _mixed_case(draw, typed_scheme)
    base_path = "".join("/" + segment for segment in base)
    return f"{typed_scheme}://{typed_netloc}{base_path}", (scheme, netloc, base_path), region


CANONICAL_URL = re.compile(
    r"(?P<scheme>https?)://(?P<netloc>[^/]+)(?P<base>(?:/[^/]+)*)"
    r"/@connections/(?P<id>(?:[A-Za-z0-9._~-]|%[0-9A-F]{2})+)"
)


@st.composite
def connection_urls(draw: st.DrawFn) -> tuple[str, str, tuple[str, str, str], str | None, str]:
    """(a connection URL as typed, its endpoint as typed, canonical endpoint, region, the id)."""
    typed_endpoint, expected, region = draw(endpoints())
    connection_id = draw(connection_ids)
    marker = draw(st.sampled_from(["@", "%40"]))
    url_id = draw(typed_in_url(connection_id))
    trailing = draw(st.sampled_from(["", "/"]))
    url = f"{typed_endpoint}/{marker}connections/{url_id}{trailing}"
    return url, typed_endpoint, expected, region, connection_id


@settings(OFFLINE_SETTINGS, max_examples=400)
@given(case=connection_urls())
@example(
    case=(
        "WSS://AbC123defg.Execute-API.us-east-1.amazonaws.com:443/prod/%40connections/R0oXAdfD0kwCH6w%3d/",
        "WSS://AbC123defg.Execute-API.us-east-1.amazonaws.com:443/prod",
        ("https", "abc123defg.execute-api.us-east-1.amazonaws.com", "/prod"),
        "us-east-1",
        "R0oXAdfD0kwCH6w=",
    )
)
def test_connection_url_round_trip(
    case: tuple[str, str, tuple[str, str, str], str | None, str],
) -> None:
    url, typed_endpoint, expected, region, connection_id = case
    target = parse_connection_url(url)
    assert target.connection_id == connection_id
    got = target.endpoint
    assert (got.scheme, got.netloc, got.base_path) == expected
    assert got.host_region == region
    # The endpoint alone, as --endpoint, is the same endpoint.
    assert parse_endpoint(typed_endpoint, "--endpoint").url == got.url
    # The CLI's path (a URL given as CONNECTION wins over everything) gives the same target,
    # or refuses an id no connection can have before anything is sent.
    if set(connection_id) <= set(ACCEPTED_ALPHABET) and len(connection_id) <= 128:
        via_cli = resolve_target(
            url, endpoint=None, api_id=None, stage=None, region=lambda: None, environ={}
        )
        assert via_cli == target
    else:
        with pytest.raises(UsageError):
            resolve_target(
                url, endpoint=None, api_id=None, stage=None, region=lambda: None, environ={}
            )

    canonical = target.url
    match = CANONICAL_URL.fullmatch(canonical)
    assert match, canonical
    assert (match["scheme"], match["netloc"], match["base"]) == expected
    assert match["id"] == encode_connection_id(connection_id)
    assert parse_connection_url(canonical) == target  # a fixed point
    assert parse_connection_url(canonical).url == canonical


@settings(OFFLINE_SETTINGS, max_examples=300)
@given(data=st.data(), endpoint=endpoints(), connection_id=accepted_ids)
def test_bare_id_typed_any_allowed_way_resolves_to_the_id(
    data: Any, endpoint: tuple[str, tuple[str, str, str], str | None], connection_id: str
) -> None:
    """The stated rule for bare ids: raw if it has no %XX (and no '://'), else decoded once."""
    typed_endpoint, expected, _ = endpoint
    typed = data.draw(typed_bare(connection_id))
    target = resolve_target(
        typed, endpoint=typed_endpoint, api_id=None, stage=None, region=lambda: None, environ={}
    )
    assert target.connection_id == connection_id
    assert (target.endpoint.scheme, target.endpoint.netloc, target.endpoint.base_path) == expected
    assert parse_connection_url(target.url).connection_id == connection_id


# -- 3. boto3 and wsconn address the same connection --------------------------------------


def test_boto3_and_wsconn_agree_on_any_id() -> None:
    with id_gateway() as gw:
        boto3_client = management_client(gw.endpoint)

        @settings(GATEWAY_SETTINGS, max_examples=40)
        @given(connection_id=real_ids)
        @example(connection_id="-R0oXAdfD0kwCH6=")
        @example(connection_id="ab-c_dEFg000001=")
        def check(connection_id: str) -> None:
            with gw.client(connection_id) as ws:
                mark = gw.mark()
                boto3_client.post_to_connection(ConnectionId=connection_id, Data=b"from boto3")
                assert ws.recv(timeout=WAIT) == "from boto3"
                url = f"{gw.endpoint}/@connections/{encode_connection_id(connection_id)}"
                run = run_wsconn("send", url, "-d", "from wsconn")
                assert run.code == 0, (run.code, run.stderr)
                assert ws.recv(timeout=WAIT) == "from wsconn"
                posts = gw.events_since(mark, "post")
                assert [p["connectionId"] for p in posts] == [connection_id, connection_id]

        check()
