"""Who is posting, and how often they may: the client's address and a limit per address.

The client is the peer of the connection, unless that peer is one of ``[subscribe]
trusted_proxies``: then it is the address the proxies put in ``X-Forwarded-For``,
read from the right, skipping the trusted ones (whatever a client writes on the left
of that header is its own claim). A client on IPv6 is counted by its /64, which one
home or one server gets whole.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence

from composer.config import IpNetwork

# The buckets kept before full ones are forgotten: memory stays flat under any load.
MAX_TRACKED = 50_000


def client_address(peer: str | None, forwarded_for: str, trusted: Sequence[IpNetwork]) -> str:
    """The client's address: ``peer`` (the connection's), or, when ``peer`` is one of
    ``trusted``, the right-most address of ``forwarded_for`` that is not."""
    address = peer or "unknown"
    if not _within(address, trusted):
        return address
    for hop in reversed([hop.strip() for hop in forwarded_for.split(",") if hop.strip()]):
        address = hop
        if not _within(hop, trusted):
            break
    return address


def _within(address: str, networks: Sequence[IpNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def bucket_of(address: str) -> str:
    """What one client is counted as: its IPv4 address, or its IPv6 /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class RateLimit:
    """At most ``per_hour`` takes an hour by each client, up to all of them at once (a
    token bucket per client, refilled evenly over the hour)."""

    def __init__(self, per_hour: int) -> None:
        self.capacity = float(per_hour)
        self.refill = per_hour / 3600.0  # per second
        self._buckets: dict[str, tuple[float, float]] = {}  # bucket: (tokens, at)

    def take(self, address: str, now: float) -> float:
        """Spend one of ``address``'s allowance at ``now`` (monotonic seconds): 0 when
        allowed, else the seconds until one is free again (nothing is spent)."""
        bucket = bucket_of(address)
        tokens, at = self._buckets.get(bucket, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.refill)
        if tokens < 1.0:
            self._buckets[bucket] = (tokens, now)
            return (1.0 - tokens) / self.refill
        if len(self._buckets) >= MAX_TRACKED:
            self._forget_full(now)
        self._buckets[bucket] = (tokens - 1.0, now)
        return 0.0

    def _forget_full(self, now: float) -> None:
        """Drop the buckets that have filled up again: forgetting them changes nothing.
        Past that (clients from more networks than are tracked), the first tracked go."""
        for bucket, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.refill >= self.capacity:
                del self._buckets[bucket]
        for bucket in list(self._buckets)[: max(0, len(self._buckets) - MAX_TRACKED // 2)]:
            del self._buckets[bucket]


def retry_after(seconds: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
