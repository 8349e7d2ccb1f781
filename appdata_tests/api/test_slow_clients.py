"""Clients that abort or stall an upload, against the real API server as the tests start it: an
aborted body costs one short log line and a count, never a traceback; a body that does not arrive
within the configured time is answered 408 and its connection closed, while /healthz answers."""

from __future__ import annotations

import logging
import os
import socket

import httpx
import pytest

from appdata_tests.support.api import LocalApi

ABORTED = int(os.environ.get("APPDATA_ABORTED_UPLOADS", "1000"))


def _partial_post(url: str, key: str) -> socket.socket:
    """A POST whose Content-Length promises 1,000 bytes, of which 10 are sent."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)  # a hung server fails, not hangs, the test
    sock.sendall(f"POST /v1/downloads HTTP/1.1\r\nHost: {host}\r\nx-api-key: {key}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{\"user_id".encode())
    return sock


def _dropped(api: LocalApi) -> dict:
    return httpx.get(f"{api.url}/healthz", timeout=30).json()["requests_dropped"]


def _read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_aborted_uploads_cost_one_short_line_each_and_no_traceback(appdata_env, caplog) -> None:
    api = LocalApi(appdata_env, os.environ["APPDATA_API_KEYS"])
    try:
        caplog.set_level(logging.DEBUG)
        for _ in range(ABORTED):
            sock = _partial_post(api.url, api.key)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()  # mid-body
        while _dropped(api)["client_disconnected"] < ABORTED:  # the server's own count decides
            pass
    finally:
        api.stop()
    assert _dropped_lines(caplog) == ABORTED
    assert [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()
            or "Exception in ASGI" in r.getMessage()] == []
    assert all(len(r.getMessage()) < 200 for r in caplog.records if r.name == "appdata.api")


def _dropped_lines(caplog) -> int:
    return sum("request dropped" in r.getMessage() for r in caplog.records if r.name == "appdata.api")


def test_a_body_that_never_arrives_gets_408_and_the_connection_closes(appdata_env, monkeypatch, caplog) -> None:
    monkeypatch.setenv("APPDATA_API_BODY_TIMEOUT", "0.5")
    api = LocalApi(appdata_env, os.environ["APPDATA_API_KEYS"])
    try:
        stalled = [_partial_post(api.url, api.key) for _ in range(20)]
        assert httpx.get(f"{api.url}/healthz", timeout=30).status_code == 200  # served beside them
        answers = [_read_all(sock) for sock in stalled]  # returns once the server closes
        for sock in stalled:
            sock.close()
        assert _dropped(api)["body_timeout"] == 20
    finally:
        api.stop()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"did not arrive within 0.5 s" in answer
    assert [r for r in caplog.records if r.exc_info] == []


@pytest.mark.parametrize("raw", ["0", "-1", "soon"])
def test_the_body_timeout_setting_is_checked(monkeypatch, raw) -> None:
    from appdata.api.guard import body_timeout_from_env

    monkeypatch.setenv("APPDATA_API_BODY_TIMEOUT", raw)
    with pytest.raises(ValueError, match="APPDATA_API_BODY_TIMEOUT"):
        body_timeout_from_env()
