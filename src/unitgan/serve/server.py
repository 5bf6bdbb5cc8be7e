"""Running the app with uvicorn: in the foreground (the CLI) or in a background thread (tests, benchmarks)."""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from unitgan.errors import UnitganError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~-]+")  # URL-unreserved: the same in a URL, a header and a cookie


def token_problem(token: str) -> str | None:
    """Why ``token`` could never log in (a character that a URL, an HTTP header or a cookie would change or
    refuse: space, '+', '%', non-ASCII), or None."""
    if TOKEN_PATTERN.fullmatch(token):
        return None
    bad = next(ch for ch in token if not TOKEN_PATTERN.fullmatch(ch))
    return f"must be letters, digits and - . _ ~ only (it travels in a URL, a header and a cookie), got {bad!r} in it"


def free_port(host: str) -> int:
    """A port of ``host`` that nothing listens on now (what ``--port 0`` binds, chosen before serving)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host.strip("[]"), 0))
            return int(sock.getsockname()[1])
    except OSError as e:
        raise UnitganError(f"cannot serve on {host}: {e.strerror or e}") from None


def run(app: Any, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, log_level: str = "info") -> None:
    """Serve ``app`` until interrupted (Ctrl-C)."""
    import uvicorn

    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=log_level == "debug")
    except OSError as e:  # typically: address already in use
        raise UnitganError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


@contextmanager
def serve_in_thread(app: Any, host: str = DEFAULT_HOST, timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` on a free port of ``host`` in a daemon thread; yields the base URL, stops on exit."""
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="unitgan-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.02)
    url_host = f"[{host}]" if ":" in host else host
    try:
        yield f"http://{url_host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
