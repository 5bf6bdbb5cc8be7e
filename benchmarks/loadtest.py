"""A bounded load test of a running server on loopback: N requests, K at a time, latency percentiles.

Used by ``serve_load.py`` and by the serving tests; benchmark code, so it lives here and not in the package."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from unitgan.errors import UnitganError
from unitgan.serve.server import is_loopback

log = logging.getLogger("unitgan.loadtest")


@dataclass
class LoadReport:
    """Latencies (seconds) of the requests that succeeded, and a message per failure."""

    requests: int
    concurrency: int
    wall_s: float
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    def summary(self) -> str:
        ms = 1000.0
        return (
            f"{self.requests} requests, {self.concurrency} at a time: {len(self.errors)} errors, "
            f"p50 {self.percentile(50) * ms:.1f} ms, p95 {self.percentile(95) * ms:.1f} ms, "
            f"max {max(self.latencies, default=float('nan')) * ms:.1f} ms, "
            f"{len(self.latencies) / self.wall_s:.1f} requests/s"
        )


def run_load(
    url: str,
    payloads: list[tuple[bytes, str]],
    requests: int = 200,
    concurrency: int = 8,
    timeout: float = 60.0,
) -> LoadReport:
    """POST ``requests`` images to ``url``/translate, ``concurrency`` at a time, cycling through ``payloads``.

    Args:
        url: the server's base URL; must be a loopback address (this is not a tool to load other machines).
        payloads: (PNG bytes, direction) pairs.
        requests: total requests sent (bounded).
        concurrency: requests in flight at once.
        timeout: seconds allowed per request.
    """
    import httpx

    host = urlsplit(url).hostname or ""
    if not is_loopback(host):
        raise UnitganError(f"load tests run on loopback only; '{host}' is not a loopback address")
    if not payloads or requests < 1 or concurrency < 1:
        raise UnitganError("a load test needs payloads, requests >= 1 and concurrency >= 1")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    report = LoadReport(requests, concurrency, 0.0)
    with httpx.Client(base_url=url, timeout=timeout, limits=limits) as client:

        def one(i: int) -> tuple[float, str | None]:
            data, direction = payloads[i % len(payloads)]
            t0 = time.perf_counter()
            try:
                r = client.post(
                    "/translate", files={"image": (f"{i}.png", data, "image/png")}, data={"direction": direction}
                )
            except httpx.HTTPError as e:
                return time.perf_counter() - t0, f"request {i}: {type(e).__name__}: {e}"
            dt = time.perf_counter() - t0
            if r.status_code != 200 or r.headers.get("content-type") != "image/png":
                return dt, f"request {i}: HTTP {r.status_code} {r.text[:200]}"
            return dt, None

        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            for dt, err in pool.map(one, range(requests)):
                if err is None:
                    report.latencies.append(dt)
                else:
                    report.errors.append(err)
        report.wall_s = time.perf_counter() - t0
    log.info("load test: %s", report.summary())
    return report
