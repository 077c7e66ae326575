"""Replaying a recorded HTTP conversation to a libcloud driver, through libcloud's own test HTTP
class (`libcloud.test.MockHttp`: the driver's real Connection, request building and response
parsing run; only the socket is replaced).

A cassette is a JSON file of exchanges in the order they happened: each request's method and
path (with its query) and the response's status and body. Requests must come in that order;
`${name}` in a recorded path or body stands for a value learnt from an earlier request's body
(`bind`). Anything else is recorded as unexpected and answered 599, so a test sees exactly which
call went astray. Once the conversation is over, a repeat of its last GET is answered again
(a periodic list), nothing else is.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from libcloud.test import MockHttp
from libcloud.utils.py3 import httplib

CASSETTES = Path(__file__).parent / "samples"


class Cassette:
    def __init__(self, name: str, bind: dict[tuple[str, str], Callable[[dict], dict[str, str]]] | None = None):
        self.exchanges = json.loads((CASSETTES / name).read_text())["exchanges"]
        self.bind = bind or {}
        """(method, path) -> a function of the request's JSON body giving `${name}` values."""
        self.values: dict[str, str] = {}
        self.position = 0
        self.requests: list[tuple[str, str, dict | None]] = []
        self.unexpected: list[str] = []
        self.endpoints: set[tuple] = set()
        """(host, port, secure) of every connection the driver opened."""
        self.lock = threading.Lock()

    def _fill(self, text: str) -> str:
        for name, value in self.values.items():
            text = text.replace("${" + name + "}", value)
        return text

    @staticmethod
    def _same(method: str, url: str, recorded: dict, fill) -> bool:
        want = urlparse(fill(recorded["path"]))
        got = urlparse(url)
        return (
            method == recorded["method"]
            and got.path.rstrip("/") == want.path.rstrip("/")
            and parse_qs(got.query) == parse_qs(want.query)
        )

    def answer(self, method: str, url: str, body) -> tuple[int, str]:
        with self.lock:
            data = json.loads(body) if body else None
            self.requests.append((method, urlparse(url).path, data))
            if self.position < len(self.exchanges):
                exchange = self.exchanges[self.position]
                if self._same(method, url, exchange["request"], self._fill):
                    self.position += 1
                    path = urlparse(url).path
                    for (m, p), learn in self.bind.items():
                        if m == method and p == path and data is not None:
                            self.values.update(learn(data))
                    response = exchange["response"]
                    return response["status"], self._fill(json.dumps(response["body"]))
                self.unexpected.append(
                    f"{method} {url} (expected {exchange['request']['method']} "
                    f"{self._fill(exchange['request']['path'])})"
                )
                return 599, "{}"
            last = self.exchanges[-1]
            if method == "GET" and self._same(method, url, last["request"], self._fill):
                return last["response"]["status"], self._fill(json.dumps(last["response"]["body"]))
            self.unexpected.append(f"{method} {url} (after the end of the conversation)")
            return 599, "{}"

    @property
    def finished(self) -> bool:
        return self.position == len(self.exchanges)

    def sent(self, method: str, path: str) -> list[dict]:
        """The bodies sent with `method` to `path`."""
        return [b for m, p, b in self.requests if m == method and p == path and b is not None]


def replaying(cassette: Cassette) -> type[MockHttp]:
    """A connection class (for a driver's `connectionCls.conn_class`) that plays `cassette`."""

    class Replay(MockHttp):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            with cassette.lock:  # where the driver would have connected
                cassette.endpoints.add((kwargs.get("host"), kwargs.get("port"), bool(kwargs.get("secure"))))

        def _get_request(self, method, url, body=None, headers=None):
            status, text = cassette.answer(method, url, body)
            return status, text, {"Content-Type": "application/json"}, httplib.responses.get(status, "Replayed")

    return Replay
