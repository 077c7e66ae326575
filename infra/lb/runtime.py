"""HAProxy's Runtime API over its UNIX sockets: the worker's admin (stats) socket and the
master's CLI socket (master-worker mode, `-W -S`). One connection per command."""

from __future__ import annotations

import csv
import io
import socket


class HaproxyError(RuntimeError):
    """HAProxy refused a command or could not be reached; the message says which and why."""


def send(path: str, command: str, timeout: float = 5.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except OSError as exc:
            raise HaproxyError(f"haproxy socket {path}: {command!r}: {exc}") from None
    return b"".join(chunks).decode(errors="replace")


FAILURE_WORDS = (
    "No such",
    "Unknown",
    "not found",
    "cannot",
    "Cannot",
    "error",
    "Error",
    "failed",
    "Require",
    "invalid",
    "Invalid",
    "already exists",
    "not supported",
)


def command(path: str, line: str) -> str:
    """Send a command whose success HAProxy answers with nothing or an acknowledgement; raise
    with HAProxy's own words otherwise."""
    answer = send(path, line).strip()
    if (
        answer
        and any(word in answer for word in FAILURE_WORDS)
        and "Server deleted" not in answer
        and "New server registered" not in answer
    ):
        raise HaproxyError(f"haproxy refused {line!r}: {answer}")
    return answer


def parse_csv(text: str) -> list[dict[str, str]]:
    """`show stat` / `show servers` output, by column name (the header line starts with '# ')."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("# "):
        raise HaproxyError(f"haproxy: no CSV header in {text[:80]!r}")
    lines[0] = lines[0][2:]
    return [row for row in csv.DictReader(io.StringIO("\n".join(lines))) if row]


def show_stat(path: str) -> list[dict[str, str]]:
    return parse_csv(send(path, "show stat"))


def worker_pid(path: str) -> int:
    for line in send(path, "show info").splitlines():
        if line.startswith("Pid:"):
            return int(line.split(":", 1)[1])
    raise HaproxyError(f"haproxy socket {path}: no Pid in `show info`")


def fire(path: str, command: str) -> None:
    """Send a command and hang up without waiting for an answer (the master CLI keeps the
    connection open after some commands; `reload` answers nothing in this version)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5.0)
        try:
            sock.connect(path)
            sock.sendall(command.encode() + b"\n")
        except OSError as exc:
            raise HaproxyError(f"haproxy socket {path}: {command!r}: {exc}") from None
