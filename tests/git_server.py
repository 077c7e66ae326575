"""A real git server for tests: `git http-backend` (smart HTTP) behind a small threaded HTTP
server that asks for HTTP basic auth, with one user and password per repository."""

from __future__ import annotations

import base64
import http.server
import subprocess
import threading
from pathlib import Path

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class GitServer:
    """Bare repositories under `root`, each reachable only with its own credentials."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.accounts: dict[str, tuple[str, str]] = {}
        self.refused: list[str] = []
        """Requests turned away (wrong or no credentials), as `<repo> <user>`."""
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
                pass

            def do_GET(self):  # noqa: N802
                self.serve()

            def do_POST(self):  # noqa: N802
                self.serve()

            def serve(self) -> None:
                path, _, query = self.path.partition("?")
                name = path.strip("/").split("/")[0]
                user, password = self.credentials()
                if name not in server.accounts or server.accounts[name] != (user, password):
                    server.refused.append(f"{name} {user}")
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "REQUEST_METHOD": self.command,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": user,
                    "PATH": "/usr/bin:/bin",
                }
                done = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True, timeout=60)
                head, _, payload = done.stdout.partition(b"\r\n\r\n")
                status = 200
                headers = []
                for line in head.decode("latin-1").split("\r\n"):
                    key, _, value = line.partition(":")
                    if key.lower() == "status":
                        status = int(value.strip().split()[0])
                    elif key:
                        headers.append((key, value.strip()))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def credentials(self) -> tuple[str, str]:
                auth = self.headers.get("Authorization", "")
                if not auth.startswith("Basic "):
                    return "", ""
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                return user, password

        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def repository(self, name: str, user: str, password: str, text: str) -> tuple[str, Path]:
        """A private repository `<name>.git` with one commit of index.html; (its URL, a clone to
        push more commits from)."""
        bare = self.root / f"{name}.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
        work = self.root / f"{name}.work"
        work.mkdir()
        git(work, "init", "-q", "-b", "main")
        self.commit(work, text)
        git(work, "remote", "add", "origin", str(bare))
        git(work, "push", "-q", "origin", "main")
        self.accounts[f"{name}.git"] = (user, password)
        return f"{self.url}/{name}.git", work

    def commit(self, work: Path, text: str) -> str:
        (work / "index.html").write_text(text)
        git(work, "add", "index.html")
        git(work, "commit", "-q", "-m", text)
        if (work / ".git" / "refs" / "remotes").exists() or git(work, "remote"):
            git(work, "push", "-q", "origin", "main")
        return git(work, "rev-parse", "HEAD")

    def stop(self) -> None:
        self.http.shutdown()
