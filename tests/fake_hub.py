"""A loopback HTTP server speaking the part of the Hugging Face Hub protocol that
`huggingface_hub` uses to download one file and list a repository.

- HEAD/GET `/{repo}/resolve/{rev}/{file}`: `X-Repo-Commit`, `ETag`, `Content-Length`, and
  `Range` requests answered with 206 so interrupted downloads resume.
- GET `/api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: `sha` and `siblings`.
- Errors carry the hub's `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound,
  GatedRepo) the way the real hub sends them: a gated repo answers 401 without a token
  and 403 with a token that has no access.

`point_at(monkeypatch, hub.endpoint, offline)` makes in-process `huggingface_hub` calls
and subprocesses use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from huggingface_hub import constants


@dataclass
class FakeRepo:
    files: dict[str, Path]  # name in the repo -> file served
    token: str | None = None  # set: the repo is gated and only this token gets through
    commit: str = ""
    etags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = "".join(sorted(self.files))
        self.commit = self.commit or hashlib.sha1(names.encode()).hexdigest()
        for name, path in self.files.items():
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    digest.update(chunk)
            self.etags[name] = digest.hexdigest()


class FakeHub:
    """Start with `with FakeHub() as hub:`; `hub.endpoint` goes into HF_ENDPOINT."""

    def __init__(self) -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[str] = []  # "METHOD path", in order
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, repo_id: str, files: dict[str, Path], token: str | None = None) -> FakeRepo:
        self.repos[repo_id] = FakeRepo(files, token)
        return self.repos[repo_id]

    def __enter__(self) -> FakeHub:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, body: bool) -> None:
            hub.requests.append(f"{self.command} {self.path}")
            parts = [unquote(p) for p in urlsplit(self.path).path.strip("/").split("/")]
            if parts[:2] == ["api", "models"]:
                self._api(parts[2:4], parts[5] if parts[4:5] == ["revision"] else "main", body)
            elif len(parts) >= 5 and parts[2] == "resolve":
                self._resolve(parts[:2], parts[3], "/".join(parts[4:]), body)
            else:
                self._error(404, "RepoNotFound", body)

        def _repo(self, owner_name: list[str], revision: str, body: bool) -> FakeRepo | None:
            repo = hub.repos.get("/".join(owner_name))
            if repo is None:
                self._error(401, "RepoNotFound", body)  # the hub hides missing repos as 401
                return None
            if repo.token is not None:
                auth = self.headers.get("Authorization")
                if auth != f"Bearer {repo.token}":
                    self._error(403 if auth else 401, "GatedRepo", body)
                    return None
            if revision not in ("main", repo.commit):
                self._error(404, "RevisionNotFound", body)
                return None
            return repo

        def _api(self, owner_name: list[str], revision: str, body: bool) -> None:
            repo = self._repo(owner_name, revision, body)
            if repo is None:
                return
            info = {
                "id": "/".join(owner_name),
                "sha": repo.commit,
                "siblings": [{"rfilename": name} for name in sorted(repo.files)],
            }
            self._send(200, json.dumps(info).encode(), {"Content-Type": "application/json"}, body)

        def _resolve(self, owner_name: list[str], revision: str, name: str, body: bool) -> None:
            repo = self._repo(owner_name, revision, body)
            if repo is None:
                return
            if name not in repo.files:
                self._error(404, "EntryNotFound", body, {"X-Repo-Commit": repo.commit})
                return
            data = repo.files[name].read_bytes()
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{repo.etags[name]}"'}
            start = 0
            if (ranged := self.headers.get("Range", "")).startswith("bytes="):
                start = int(ranged[6:].split("-")[0] or 0)
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            self._send(206 if start else 200, data[start:], headers, body)

        def _error(self, status: int, code: str, body: bool, headers: dict | None = None) -> None:
            message = f"{code} (fake hub)"
            headers = {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})}
            self._send(status, json.dumps({"error": message}).encode(), headers, body)

        def _send(self, status: int, data: bytes, headers: dict, body: bool) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

    return Handler


def point_at(monkeypatch: pytest.MonkeyPatch, endpoint: str, offline: bool) -> None:
    """Make this process and its children use `endpoint`, online or offline.

    `huggingface_hub` copies HF_ENDPOINT, HF_HUB_OFFLINE and the cache and token paths
    into `huggingface_hub.constants` when it is first imported (during collection, before
    any fixture), so setting the environment reaches subprocesses only: the constants
    are pointed at the same values here, the cache at conftest's isolated HF_HOME.
    """
    home = Path(os.environ["HF_HOME"])
    settings = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_OFFLINE": offline,
        "HF_HUB_CACHE": os.environ["HF_HUB_CACHE"],
        "HF_TOKEN_PATH": str(home / "token"),
    }
    for name, value in settings.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
