"""One bounded HTTP POST for the LLM judge: total time, reply size and redirects all limited.

`urllib.request` bounds only each socket operation (a server dripping a byte a second keeps a
request open forever), reads the whole reply into memory, and follows a 301/302/303 as a GET that
carries the `Authorization` header to whatever host the `Location` names. Here:

- the whole request (connect, send, headers, body) ends after `timeout_s`: a watchdog shuts the
  socket down and the call raises `TimeoutError`;
- a reply larger than `max_bytes` (announced by Content-Length or counted while reading) is
  abandoned after at most `max_bytes` + one read;
- a redirect is never followed (`JudgeRedirectError`): the key goes to the configured endpoint
  and nowhere else, and a chat-completion POST cannot survive a redirect anyway;
- any other status than 200 raises `urllib.error.HTTPError` (retried by the judge).

Environment proxies (`https_proxy`) are not used: the judge connects to the endpoint directly.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import urllib.error
import urllib.parse

_READ_CHUNK = 64 << 10


class JudgeError(Exception):
    """A judge answer that cannot be used (bad HTTP status, body, or rating)."""


class JudgeRedirectError(JudgeError):
    """The endpoint answered with a redirect; it is not followed (the API key stays home)."""


def _connection(url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout_s,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout_s)
    return conn, path


def _read_at_most(response: http.client.HTTPResponse, max_bytes: int) -> bytes:
    length = response.getheader("Content-Length", "")
    if length.strip().isdigit() and int(length) > max_bytes:
        raise JudgeError(f"the judge's reply announces {int(length)} bytes, more than "
                         f"rewards.judge.max_reply_bytes={max_bytes}; not read")
    chunks, size = [], 0
    while chunk := response.read1(_READ_CHUNK):
        size += len(chunk)
        if size > max_bytes:
            raise JudgeError(f"the judge's reply exceeds rewards.judge.max_reply_bytes={max_bytes}; "
                             "abandoned")
        chunks.append(chunk)
    return b"".join(chunks)


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float, max_bytes: int) -> bytes:
    """The body of a 200 answer to POST `body` at `url`, within `timeout_s` seconds in all."""
    conn, path = _connection(url, timeout_s)
    expired = threading.Event()
    connected = []  # the socket: http.client drops conn.sock once a reply will close it

    def expire():
        expired.set()
        for sock in connected:  # wakes up a blocked read in the requesting thread
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    watchdog = threading.Timer(timeout_s, expire)
    watchdog.daemon = True
    watchdog.start()
    try:
        conn.connect()
        connected.append(conn.sock)
        if expired.is_set():
            raise TimeoutError
        conn.request("POST", path, body, headers)
        response = conn.getresponse()
        if 300 <= response.status < 400:
            raise JudgeRedirectError(
                f"the judge endpoint {url} answered {response.status} redirecting to "
                f"{response.getheader('Location')!r}; redirects are not followed (the API key is "
                "only sent to the configured endpoint): set rewards.judge.endpoint to the final URL")
        if response.status != 200:
            raise urllib.error.HTTPError(url, response.status, response.reason, response.headers, None)
        payload = _read_at_most(response, max_bytes)
        if expired.is_set():  # the watchdog's shutdown reads as an early end of the body
            raise TimeoutError
        return payload
    except (OSError, http.client.HTTPException) as err:
        if expired.is_set():
            raise TimeoutError(f"the judge gave no complete answer within {timeout_s} s") from err
        raise
    finally:
        watchdog.cancel()
        conn.close()
