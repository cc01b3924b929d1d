"""The connections under a provider's HTTP client: urllib3 pools whose connections a stream
can cut (`StreamScope`), direct or through the proxy the environment names."""

from __future__ import annotations

import socket
import threading

import certifi
import urllib3
from requests.utils import get_auth_from_url, get_environ_proxies, prepend_scheme_if_needed
from urllib3.util import make_headers, parse_url

# Enough connections for every stream a gevent worker may hold to one provider at once.
POOL_SIZE = 256


class StreamScope:
    """Lets another thread abort the provider connections a stream uses.

    The thread that runs a provider's stream enters the scope; every connection it sends a
    request on is registered (before the request goes out, so a provider still silent
    before its headers can be cut off too), and `abort()` (from the thread serving the
    client, when the client goes away) shuts their sockets, which ends any read waiting on
    them. Once the scope is left its connections are back in the pool, serving others: an
    abort after that does nothing.
    """

    _local = threading.local()

    def __init__(self) -> None:
        self._connections: list = []
        self._lock = threading.Lock()
        self.aborted = False
        self.watching = False
        self._closed = False
        # Called when a provider has accepted the streamed request (its headers arrived).
        self.on_open = None

    @classmethod
    def current(cls) -> StreamScope | None:
        return getattr(cls._local, "scope", None)

    def __enter__(self) -> StreamScope:
        StreamScope._local.scope = self
        return self

    def __exit__(self, *exc) -> None:
        StreamScope._local.scope = None
        with self._lock:
            self._closed = True
            self._connections.clear()

    def watch(self, watching: bool) -> None:
        """Register the connections of the requests to come (a stream's), or stop, forgetting
        those registered: they go back to the pool once their response is closed."""
        with self._lock:
            self.watching = watching
            self._connections.clear()

    def register(self, connection) -> None:
        with self._lock:
            if not self.watching:
                return
            self._connections.append(connection)
            aborted = self.aborted
        if aborted:
            _shut(connection)

    def abort(self) -> None:
        with self._lock:
            self.aborted = True
            connections = [] if self._closed else list(self._connections)
        for connection in connections:
            _shut(connection)


def _shut(connection) -> None:
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Registering:
    """A urllib3 connection that tells the current StreamScope it is about to be used."""

    def request(self, *args, **kwargs):
        scope = StreamScope.current()
        if scope is not None:
            scope.register(self)
        return super().request(*args, **kwargs)


class _HTTPConnection(_Registering, urllib3.connection.HTTPConnection):
    pass


class _HTTPSConnection(_Registering, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class UnusableProxy(ValueError):
    """The environment names a proxy for a provider that Gaia cannot go through (a SOCKS
    proxy): each call fails with this, rather than going around it or stopping start-up."""


def environment_proxy(base_url: str) -> str | None:
    """The proxy URL the environment names for `base_url` (`HTTPS_PROXY`, `HTTP_PROXY`,
    `ALL_PROXY`, with `NO_PROXY` honoured), with `http://` put in front of a bare
    `host:port` as curl and requests do; None to go direct."""
    proxies = get_environ_proxies(base_url)
    proxy = proxies.get(base_url.partition(":")[0].lower()) or proxies.get("all")
    return prepend_scheme_if_needed(proxy, "http") if proxy else None


def pool_manager(base_url: str, headers: dict[str, str]) -> urllib3.PoolManager:
    """A pool manager for one provider: direct, or through the environment's proxy, with the
    proxy's credentials (`http://user:password@host:port`) sent as Basic auth. Its pools use
    connections a StreamScope can cut; certificates are checked against certifi's bundle.
    Raises UnusableProxy for a proxy scheme other than http or https."""
    options = {"num_pools": 2, "maxsize": POOL_SIZE, "block": False, "retries": False, "headers": headers,
               "ca_certs": certifi.where()}
    proxy = environment_proxy(base_url)
    if proxy is None:
        manager = urllib3.PoolManager(**options)
    else:
        parsed = parse_url(proxy)
        if parsed.scheme not in ("http", "https"):
            raise UnusableProxy(f"the proxy {parsed.scheme}://{parsed.host}:{parsed.port or ''} the environment "
                                "names is not HTTP(S), and only HTTP(S) proxies are supported")
        user, password = get_auth_from_url(proxy)
        proxy_headers = make_headers(proxy_basic_auth=f"{user}:{password}") if user or password else None
        bare = parsed._replace(auth=None).url
        manager = urllib3.ProxyManager(bare, proxy_headers=proxy_headers, **options)
    manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
    return manager
