"""Gateway dependencies: which address is the client's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from starlette.requests import Request

from gateway.deps import get_client_ip
from gateway.ratelimit import parse_networks


def _request(peer: str, headers: list[tuple[bytes, bytes]]) -> Request:
    return Request({"type": "http", "client": (peer, 1234), "headers": headers})


@pytest.mark.unit
def test_repeated_forwarded_header_lines_are_read_as_one_list() -> None:
    """A proxy may append its own header line after the client's instead of joining
    them: the client-written first line must not decide the address."""
    state = SimpleNamespace(
        settings=SimpleNamespace(client_ip_header="X-Forwarded-For"),
        trusted_proxies=parse_networks(["10.0.0.0/8"]),
    )
    request = _request(
        "10.0.0.5",
        [(b"x-forwarded-for", b"6.6.6.6"), (b"x-forwarded-for", b"198.51.100.7")],
    )
    assert get_client_ip(request, state) == "198.51.100.7"  # type: ignore[arg-type]


@pytest.mark.unit
def test_single_forwarded_header_line() -> None:
    state = SimpleNamespace(
        settings=SimpleNamespace(client_ip_header="X-Forwarded-For"),
        trusted_proxies=parse_networks(["10.0.0.0/8"]),
    )
    request = _request("10.0.0.5", [(b"x-forwarded-for", b"6.6.6.6, 198.51.100.7")])
    assert get_client_ip(request, state) == "198.51.100.7"  # type: ignore[arg-type]
    assert get_client_ip(_request("10.0.0.5", []), state) == "10.0.0.5"  # type: ignore[arg-type]
