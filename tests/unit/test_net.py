"""The URL policy on literal addresses and schemes, and real fetches against a local HTTP server."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from frontend.net import (
    FetchError,
    SafeTransport,
    UnsafeUrlError,
    UrlPolicy,
    check_url,
    fetch,
    is_public_address,
    parse_ip_literal,
)

PUBLIC_IP = "93.184.216.34"
OPEN = UrlPolicy(allow_private=True, timeout_s=5.0)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: bool = True
    delay_s: float = 0.0


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


Handler = Callable[[Received], Reply]


class LocalServer:
    """A tiny HTTP/1.1 responder on 127.0.0.1 (one request per connection) that records requests."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.requests: list[Received] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.ensure_future(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in head[1:] if line)
            headers = {k.lower(): v for k, v in headers.items()}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            request = Received(method, path, headers, body)
            self.requests.append(request)
            reply = self.handler(request)
            await asyncio.sleep(reply.delay_s)
            lines = [f"HTTP/1.1 {reply.status} X", "Connection: close"]
            lines += [f"{name}: {value}" for name, value in reply.headers.items()]
            if reply.content_length:
                lines.append(f"Content-Length: {len(reply.body)}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + reply.body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[LocalServer]:
    server = LocalServer(handler, tls)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def routes(table: dict[str, Reply]) -> Handler:
    return lambda request: table.get(request.path, Reply(404, b"not found"))


def resolver_for(table: dict[str, Sequence[str]]) -> Callable[[str, int], Awaitable[Sequence[str]]]:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    return resolve


async def no_dns(host: str, port: int) -> Sequence[str]:
    raise AssertionError(f"literal addresses must not be resolved ({host})")


BLOCKED_LITERALS = [
    "http://127.0.0.1/",
    "http://127.255.255.254:8080/x",
    "http://2130706433/",  # decimal 127.0.0.1
    "http://017700000001/",  # octal
    "http://0x7f000001/",  # hex
    "http://0x7f.0.0.1/",
    "http://127.1/",
    "http://0/",
    "http://0.0.0.0/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://100.127.255.254/",
    "http://198.18.0.1/",
    "http://192.0.0.8/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://[::1]/",
    "http://[::]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",
    "http://[fe80::1]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fec0::1]/",
    "http://[ff02::1]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of 169.254.169.254
    "http://[2002:7f00:1::1]/",  # 6to4 of 127.0.0.1
    "https://[2001:db8::1]/",  # documentation range
]

ALLOWED_LITERALS = [
    f"http://{PUBLIC_IP}/audio.wav",
    "https://8.8.8.8:8443/x?y=1",
    "http://1.1.1.1/",
    "https://[2606:4700:4700::1111]/a",
    "http://134744072/",  # decimal 8.8.8.8
]


@pytest.mark.parametrize("url", BLOCKED_LITERALS)
async def test_private_literals_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrlError, match="not a public address"):
        await check_url(url, UrlPolicy(), resolver=no_dns)


@pytest.mark.parametrize("url", ALLOWED_LITERALS)
async def test_public_literals_are_allowed(url: str) -> None:
    await check_url(url, UrlPolicy(), resolver=no_dns)


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "http://[::1]/", "http://10.1.2.3/", "http://2130706433/"])
async def test_allow_private_permits_internal_addresses(url: str) -> None:
    await check_url(url, UrlPolicy(allow_private=True), resolver=no_dns)


@pytest.mark.parametrize(
    ("host", "expected"),
    [("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.1", "127.0.0.1"), ("127.1", "127.0.0.1"),
     ("[::1]", "::1"), ("example.com", None), ("1e100.net", None), ("", None)],
)  # fmt: skip
def test_ip_literals_are_read_like_the_c_library(host: str, expected: str | None) -> None:
    address = parse_ip_literal(host)
    assert (str(address) if address else None) == expected


def test_public_address_classification() -> None:
    assert is_public_address(parse_ip_literal(PUBLIC_IP))  # type: ignore[arg-type]
    assert not is_public_address(parse_ip_literal("100.64.0.1"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    ["file:///etc/passwd", "ftp://example.com/a.wav", "gopher://example.com:70/_x", "data:audio/wav;base64,AAAA",
     "javascript:alert(1)", "ws://example.com/", "http:///no-host", "//example.com/a.wav", "example.com/a.wav", "",
     "http://user:pass@example.com/", "http://example.com@127.0.0.1/", "http://example.com\\@127.0.0.1/"],
)  # fmt: skip
async def test_bad_schemes_hosts_and_userinfo_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrlError):
        await check_url(url, UrlPolicy(allow_private=True), resolver=no_dns)


async def test_any_private_address_of_a_name_refuses_it() -> None:
    resolver = resolver_for({"mixed.test": [PUBLIC_IP, "10.0.0.7"], "public.test": [PUBLIC_IP, "2606:4700::1"]})
    await check_url("https://public.test/a", UrlPolicy(), resolver=resolver)
    with pytest.raises(UnsafeUrlError):
        await check_url("https://mixed.test/a", UrlPolicy(), resolver=resolver)


async def test_localhost_is_refused_through_real_resolution() -> None:
    with pytest.raises(UnsafeUrlError):
        await check_url("http://localhost:8000/", UrlPolicy())


async def test_unresolvable_host_is_a_fetch_error() -> None:
    with pytest.raises(FetchError, match="resolve"):
        await check_url("http://nowhere.test/", UrlPolicy(), resolver=resolver_for({}))


# Real fetches against a local server.


async def test_loopback_server_is_refused_by_default() -> None:
    async with serving(routes({"/a.wav": Reply(body=b"RIFF")})) as server:
        with pytest.raises(UnsafeUrlError):
            await fetch(f"{server.url}/a.wav", UrlPolicy())
        assert server.requests == []


async def test_allow_private_fetches_the_body() -> None:
    body = bytes(range(256)) * 40
    async with serving(routes({"/a.wav": Reply(body=body)})) as server:
        assert await fetch(f"{server.url}/a.wav", OPEN) == body
        assert [r.method for r in server.requests] == ["GET"]


async def test_error_status_is_a_fetch_error() -> None:
    async with serving(routes({})) as server:
        with pytest.raises(FetchError, match="HTTP 404"):
            await fetch(f"{server.url}/missing", OPEN)


@pytest.mark.parametrize("content_length", [True, False])
async def test_size_limit(content_length: bool) -> None:
    policy = UrlPolicy(allow_private=True, max_bytes=1000, timeout_s=5.0)
    table = {"/big": Reply(body=b"x" * 5000, content_length=content_length),
             "/fits": Reply(body=b"y" * 1000, content_length=content_length)}  # fmt: skip
    async with serving(routes(table)) as server:
        with pytest.raises(FetchError, match="exceeds the limit of 1000 bytes") as caught:
            await fetch(f"{server.url}/big", policy)
        assert ("5000 bytes" in str(caught.value)) is content_length
        assert await fetch(f"{server.url}/fits", policy) == b"y" * 1000


async def test_timeout() -> None:
    policy = UrlPolicy(allow_private=True, timeout_s=0.3)
    async with serving(routes({"/slow": Reply(body=b"late", delay_s=5.0)})) as server:
        started = asyncio.get_running_loop().time()
        with pytest.raises(FetchError, match="timed out"):
            await fetch(f"{server.url}/slow", policy)
        assert asyncio.get_running_loop().time() - started < 2.0


async def test_redirect_chain_is_followed() -> None:
    async with serving(lambda r: REDIRECTS.get(r.path, Reply(200, b"audio"))) as server:
        assert await fetch(f"{server.url}/r1", OPEN) == b"audio"
        assert [r.path for r in server.requests] == ["/r1", "/r2", "/r3", "/final"]
        assert all(r.method == "GET" for r in server.requests)


REDIRECTS = {
    "/r1": Reply(301, headers={"Location": "/r2"}),
    "/r2": Reply(307, headers={"Location": "r3"}),
    "/r3": Reply(303, headers={"Location": "/final"}),
    "/loop": Reply(302, headers={"Location": "/loop"}),
    "/to-file": Reply(302, headers={"Location": "file:///etc/passwd"}),
}


async def test_redirect_limit() -> None:
    policy = UrlPolicy(allow_private=True, timeout_s=5.0, max_redirects=3)
    async with serving(lambda r: REDIRECTS[r.path]) as server:
        with pytest.raises(FetchError, match="more than 3"):
            await fetch(f"{server.url}/loop", policy)
        assert len(server.requests) == 4


async def test_redirect_to_file_url_is_refused_even_when_private_is_allowed() -> None:
    async with serving(lambda r: REDIRECTS[r.path]) as server:
        with pytest.raises(UnsafeUrlError, match="http and https"):
            await fetch(f"{server.url}/to-file", OPEN)
        assert len(server.requests) == 1


def _public_site(seen: list[str]) -> httpx.AsyncClient:
    """A client whose transport plays a public site at public.test that redirects elsewhere."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        targets = {"/metadata": "http://169.254.169.254/latest/meta-data/", "/internal": "http://internal.test/x",
                   "/next": "/audio"}  # fmt: skip
        if request.url.path in targets:
            return httpx.Response(302, headers={"Location": targets[request.url.path]})
        return httpx.Response(200, content=b"public audio")

    return httpx.AsyncClient(transport=httpx.MockTransport(handle))


@pytest.mark.parametrize("path", ["/metadata", "/internal"])
async def test_each_redirect_hop_is_rechecked(path: str) -> None:
    seen: list[str] = []
    resolver = resolver_for({"public.test": [PUBLIC_IP], "internal.test": ["10.20.30.40"]})
    async with _public_site(seen) as client:
        assert await fetch("http://public.test/next", UrlPolicy(), client, resolver=resolver) == b"public audio"
        with pytest.raises(UnsafeUrlError):
            await fetch(f"http://public.test{path}", UrlPolicy(), client, resolver=resolver)
    assert seen == ["http://public.test/next", "http://public.test/audio", f"http://public.test{path}"]


async def test_connection_goes_to_the_checked_address_with_the_original_host() -> None:
    """`pinned.test` exists only in our resolver, so reaching the server proves the socket used its answer."""
    async with serving(routes({"/a.wav": Reply(body=b"pinned")})) as server:
        resolver = resolver_for({"pinned.test": ["127.0.0.1"]})
        url = f"http://pinned.test:{server.port}/a.wav"
        assert await fetch(url, OPEN, resolver=resolver) == b"pinned"
        assert server.requests[0].headers["host"] == f"pinned.test:{server.port}"


async def test_dns_rebinding_between_check_and_connect_is_refused() -> None:
    answers = iter([[PUBLIC_IP], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> Sequence[str]:
        return next(answers)

    async with serving(routes({"/a.wav": Reply(body=b"secret")})) as server:
        with pytest.raises(UnsafeUrlError):
            await fetch(f"http://rebind.test:{server.port}/a.wav", UrlPolicy(), resolver=rebinding)
        assert server.requests == []


async def test_peer_address_is_checked_with_a_caller_supplied_client() -> None:
    """A plain client resolves `localhost` itself; the check saw a public answer, the peer is loopback."""
    async with (
        serving(routes({"/a.wav": Reply(body=b"secret")})) as server,
        httpx.AsyncClient(trust_env=False) as client,
    ):
        resolver = resolver_for({"localhost": [PUBLIC_IP]})
        with pytest.raises(UnsafeUrlError):
            await fetch(f"http://localhost:{server.port}/a.wav", UrlPolicy(), client, resolver=resolver)
        assert len(server.requests) == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for `pinned.test` only."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "1", "-subj", "/CN=pinned.test", "-addext", "subjectAltName=DNS:pinned.test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)  # fmt: skip
    return cert, key


@pytest.mark.parametrize(("name", "ok"), [("pinned.test", True), ("other.test", False)])
async def test_https_to_a_pinned_address_verifies_the_host_name(
    certificate: tuple[Path, Path], name: str, ok: bool
) -> None:
    """The socket goes to 127.0.0.1 while SNI and certificate checks use the URL's host name."""
    cert, key = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_tls.sni_callback = lambda _sock, sni, _ctx: names.append(sni)
    client_tls = ssl.create_default_context(cafile=str(cert))
    resolver = resolver_for({name: ["127.0.0.1"]})
    async with (
        serving(routes({"/a.wav": Reply(body=b"over tls")}), tls=server_tls) as server,
        httpx.AsyncClient(transport=SafeTransport(OPEN, resolver=resolver, verify=client_tls)) as client,
    ):
        url = f"https://{name}:{server.port}/a.wav"
        if ok:
            assert await fetch(url, OPEN, client, resolver=resolver) == b"over tls"
            assert server.requests[0].headers["host"] == f"{name}:{server.port}"
        else:
            with pytest.raises(FetchError):
                await fetch(url, OPEN, client, resolver=resolver)
            assert server.requests == []
    assert names == [name]
