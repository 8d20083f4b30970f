"""A stand-in for the Hugging Face Hub, on localhost, for tests: it serves folders as model repos.

The Hub cannot be reached from the test machines, yet loading *by repo id* takes other code paths than loading a
folder: `diffusers` downloads only the files its allow-patterns name, `transformers` fetches remote code file by
file. `LocalHub` answers the few read-only endpoints `huggingface_hub` uses for that (repo info, the file tree, file
metadata and downloads), so that a test can point `HF_ENDPOINT` at it and load `org/name` as a user would. Each repo
is one folder under `root` (`root/org/name`), served at one fixed commit; nothing can be uploaded.
"""

from __future__ import annotations

import hashlib
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the one revision of every repo
INFO_KINDS = ("revision", "tree")  # /api/models/<org>/<name>[/revision/<rev> | /tree/<rev>[/<path>]]


class LocalHub:
    """`with LocalHub(root) as hub:` serves `root/<org>/<name>` at `hub.endpoint`; `hub.requests` logs each path."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LocalHub:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def downloaded(self, repo_id: str) -> set[str]:
        """The files of `repo_id` that were fetched in full (GET, not HEAD), at any revision."""
        return self.requested(repo_id, methods=("GET",))

    def requested(self, repo_id: str, methods: tuple[str, ...] = ("GET", "HEAD")) -> set[str]:
        """The files of `repo_id` asked for with any of `methods`, at any revision. `huggingface_hub` asks for each
        file's metadata (HEAD) and skips the GET when its cache already holds a blob with the same content, so a file
        identical to one fetched before is requested but never downloaded."""
        found = set()
        for method in methods:
            prefix = f"{method} /{repo_id}/resolve/"
            found |= {line[len(prefix) :].split("/", 1)[1] for line in self.requests if line.startswith(prefix)}
        return found

    def repo_folder(self, repo_id: str) -> Path | None:
        parts = repo_id.split("/")
        if len(parts) != 2 or any(part in ("", ".", "..") for part in parts):
            return None
        folder = self.root.joinpath(*parts)
        return folder if folder.is_dir() else None


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def _oid(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _handler(hub: LocalHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet: the tests read hub.requests instead
            pass

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _answer(self, head: bool) -> None:
            path = urllib.parse.urlparse(self.path).path
            hub.requests.append(f"{self.command} {path}")
            parts = [urllib.parse.unquote(part) for part in path.strip("/").split("/")]
            if parts[:2] == ["api", "models"] and (len(parts) == 4 or len(parts) >= 6 and parts[4] in INFO_KINDS):
                return self._api(parts[2] + "/" + parts[3], parts[4] if len(parts) > 4 else "revision",
                                 "/".join(parts[6:]))
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._file(parts[0] + "/" + parts[1], "/".join(parts[4:]), head)
            self._send(404, b'{"error": "not served by LocalHub"}', {"X-Error-Code": "EntryNotFound"})

        def _api(self, repo_id: str, kind: str, sub_path: str) -> None:
            folder = hub.repo_folder(repo_id)
            if folder is None:
                return self._send(404, b'{"error": "Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            files = _files(folder)
            if kind == "revision":
                body = {"id": repo_id, "modelId": repo_id, "sha": COMMIT, "private": False, "disabled": False,
                        "gated": False, "tags": [], "downloads": 0, "likes": 0,
                        "siblings": [{"rfilename": path.relative_to(folder).as_posix()} for path in files]}  # fmt: skip
            else:
                inside = [path for path in files if path.relative_to(folder).as_posix().startswith(sub_path)]
                body = [{"type": "file", "oid": _oid(path), "size": path.stat().st_size,
                         "path": path.relative_to(folder).as_posix()} for path in inside]  # fmt: skip
            self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})

        def _file(self, repo_id: str, relative: str, head: bool) -> None:
            folder = hub.repo_folder(repo_id)
            target = None if folder is None else (folder / relative).resolve()
            if target is None or folder.resolve() not in target.parents or not target.is_file():
                return self._send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
            data = target.read_bytes()
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                       "Content-Type": "application/octet-stream"}  # fmt: skip
            self._send(200, b"" if head else data, headers, length=len(data))

        def _send(self, status: int, body: bytes, headers: dict, length: int | None = None) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body) if length is None else length))
            self.end_headers()
            if body:
                self.wfile.write(body)

    return Handler
