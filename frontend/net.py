"""Fetching user-supplied URLs without letting them reach our own network (SSRF).

The address policy is shared with webhooks. DNS rebinding (a name that resolves to a public
address when checked and to 127.0.0.1 when connected) is defeated by checking at connect time:
`SafeTransport` swaps httpcore's network backend for `_CheckedBackend`, whose `connect_tcp`
resolves the host, refuses unsafe addresses and then connects to the very address it checked.
httpcore still sends the original Host header and uses the host name for TLS SNI and certificate
checks, because only the socket's destination changes. `check_url` runs on every redirect hop too,
for clear errors before any request; with a caller-supplied client (no pinning) the peer address of
each response is checked as well (`check_peer`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpcore
import httpx
import msgspec

log = logging.getLogger("frontend.net")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Maps (host, port) to IP address strings; the default asks the system via `loop.getaddrinfo`."""

SCHEMES = ("http", "https")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# Not global yet missed by Python 3.11's `is_private`: carrier-grade NAT, IETF protocol assignments,
# local-use NAT64.
_ALSO_BLOCKED = (
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("192.0.0.0/24"),
    ipaddress.ip_network("64:ff9b:1::/48"),
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UrlPolicy(msgspec.Struct, frozen=True):
    allow_private: bool = False
    max_bytes: int = 25 * 1024 * 1024
    timeout_s: float = 60.0
    max_redirects: int = 5


class UnsafeUrlError(Exception):
    """The URL is malformed, not http(s), or points at an address we refuse to contact."""


class FetchError(Exception):
    """The URL was acceptable but fetching it failed (status, size, timeout, network)."""


def is_public_address(ip: IPAddress) -> bool:
    """False for loopback, private, link-local, multicast, reserved, unspecified, CGNAT and the like."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not is_public_address(embedded):
            return False
        if ip.is_site_local:
            return False
    if any(ip in network for network in _ALSO_BLOCKED):
        return False
    unsafe = ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
    return not (unsafe or ip.is_reserved or ip.is_unspecified) and ip.is_global


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a host string denotes by itself, in any notation the C library accepts.

    `inet_aton` is what getaddrinfo uses for numeric hosts, so decimal (`2130706433`), octal
    (`0177.0.0.1`), hex (`0x7f.1`) and short (`127.1`) forms are read exactly as a connect would.
    """
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if ":" in host or not host or any(c.isspace() for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve_safe(host: str, port: int, policy: UrlPolicy, resolver: Resolver | None = None) -> list[str]:
    """The host's addresses, all of them allowed by the policy; raises otherwise."""
    literal = parse_ip_literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            found = await (resolver or system_resolve)(host, port)
        except OSError as exc:
            raise FetchError(f"Could not resolve the host {host!r}.") from exc
        addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]
        if not addresses:
            raise FetchError(f"Could not resolve the host {host!r}.")
    if not policy.allow_private and not all(is_public_address(a) for a in addresses):
        raise UnsafeUrlError(f"The URL's host {host!r} is not a public address; refusing to connect to it.")
    return [str(a) for a in addresses]


def parse_url(url: str | httpx.URL) -> httpx.URL:
    """The URL if it is an absolute http(s) URL with a host and no user info."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise UnsafeUrlError(f"The URL is not valid: {exc}") from exc
    if parsed.scheme not in SCHEMES:
        raise UnsafeUrlError("Only http and https URLs are allowed.")
    if not parsed.host:
        raise UnsafeUrlError("The URL has no host.")
    if parsed.userinfo:
        raise UnsafeUrlError("URLs with a user name or password are not allowed.")
    return parsed


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


async def check_url(url: str | httpx.URL, policy: UrlPolicy, *, resolver: Resolver | None = None) -> None:
    """Raises UnsafeUrlError unless the URL is http(s) and every address of its host is allowed."""
    parsed = parse_url(url)
    await resolve_safe(parsed.host, _port(parsed), policy, resolver)


def check_peer(response: httpx.Response, policy: UrlPolicy) -> None:
    """Refuses a response whose socket's peer is not allowed (catches rebinding without pinning)."""
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    if policy.allow_private or not peer:
        return
    address = parse_ip_literal(str(peer[0]))
    if address is None or not is_public_address(address):
        raise UnsafeUrlError("The URL's host resolved to an address that is not public; refusing it.")


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolves and checks at connect time, then connects to the checked address itself."""

    def __init__(self, policy: UrlPolicy, resolver: Resolver | None) -> None:
        self._policy = policy
        self._resolver = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend signature)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve_safe(host, port, self._policy, self._resolver)
        except FetchError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error: Exception = httpcore.ConnectError(f"Could not connect to {host!r}.")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's backend signature)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not allowed.")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class SafeTransport(httpx.AsyncHTTPTransport):
    """An httpx transport whose every connection goes through `_CheckedBackend`.

    httpx does not take a network backend, so the connection pool it built is replaced by one that
    uses ours (`_pool` is what `handle_async_request` and `aclose` use in httpx 0.2x).
    """

    def __init__(self, policy: UrlPolicy, *, resolver: Resolver | None = None, verify: ssl.SSLContext | bool = True):
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify, trust_env=False)
        super().__init__(verify=context, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=100,
            max_keepalive_connections=20,
            network_backend=_CheckedBackend(policy, resolver),
        )


def safe_client(
    policy: UrlPolicy, *, resolver: Resolver | None = None, timeout_s: float | None = None
) -> httpx.AsyncClient:
    """A client that never follows redirects, ignores proxy variables and connects only to checked addresses."""
    return httpx.AsyncClient(
        transport=SafeTransport(policy, resolver=resolver),
        follow_redirects=False,
        trust_env=False,
        timeout=policy.timeout_s if timeout_s is None else timeout_s,
    )


async def fetch(
    url: str,
    policy: UrlPolicy,
    client: httpx.AsyncClient | None = None,
    *,
    resolver: Resolver | None = None,
) -> bytes:
    """The body of a GET on the URL, following at most `max_redirects` redirects, each one checked."""
    owned = client is None
    http = safe_client(policy, resolver=resolver) if client is None else client
    try:
        async with asyncio.timeout(policy.timeout_s):
            return await _follow(http, parse_url(url), policy, resolver)
    except TimeoutError as exc:
        raise FetchError(f"Fetching the URL timed out after {policy.timeout_s:g} s.") from exc
    except httpx.TimeoutException as exc:
        raise FetchError(f"Fetching the URL timed out after {policy.timeout_s:g} s.") from exc
    except httpx.HTTPError as exc:
        raise FetchError(f"Could not fetch the URL: {type(exc).__name__}.") from exc
    finally:
        if owned:
            await http.aclose()


async def _follow(client: httpx.AsyncClient, url: httpx.URL, policy: UrlPolicy, resolver: Resolver | None) -> bytes:
    for _ in range(policy.max_redirects + 1):
        await check_url(url, policy, resolver=resolver)
        async with client.stream("GET", url, follow_redirects=False) as response:
            check_peer(response, policy)
            location = response.headers.get("location")
            if response.status_code in REDIRECT_STATUSES and location:
                url = _redirect_target(url, location)
                continue
            log.info("fetched %s: HTTP %d", url.host, response.status_code)
            if not response.is_success:
                raise FetchError(f"The URL returned HTTP {response.status_code}.")
            return await _read_limited(response, policy.max_bytes)
    raise FetchError(f"The URL redirected more than {policy.max_redirects} times.")


def _redirect_target(url: httpx.URL, location: str) -> httpx.URL:
    try:
        return parse_url(url.join(location))
    except httpx.InvalidURL as exc:
        raise UnsafeUrlError(f"The URL redirected to an invalid URL: {exc}") from exc


async def _read_limited(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError(f"The URL's content ({declared} bytes) exceeds the limit of {max_bytes} bytes.")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise FetchError(f"The URL's content exceeds the limit of {max_bytes} bytes.")
    return bytes(body)
