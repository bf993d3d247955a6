"""A small, local, in-memory fake of the Hugging Face Hub HTTP API for tests.

It implements the subset of the Hub API that ``huggingface_hub`` 2.x uses for

* ``HfApi.create_repo``            -> ``POST /api/repos/create``
* ``HfApi.upload_folder``          -> ``POST /api/validate-yaml`` (README.md metadata check),
                                      ``POST /api/models/{repo}/preupload/{rev}`` (answers ``"regular"`` for every
                                      file, so no LFS / Xet transfer is ever needed),
                                      ``POST /api/models/{repo}/commit/{rev}`` (NDJSON, base64-inline files)
* ``HfApi.repo_info``/``model_info`` -> ``GET /api/models/{repo}[/revision/{rev}]`` (``sha`` + ``siblings``)
* ``HfApi.list_repo_tree``         -> ``GET /api/models/{repo}/tree/{rev}[/{path}]``
* ``hf_hub_download``              -> ``HEAD``/``GET /{repo}/resolve/{rev}/{filename}`` with the ``X-Repo-Commit``,
                                      ``ETag`` and ``Content-Length`` headers the client relies on
* ``HfApi.whoami``                 -> ``GET /api/whoami-v2``

so ``snapshot_download`` and ``upload_folder`` work end to end against it.

Failure modes for tests:

* **token refused** -- any request carrying a token that is not in :attr:`FakeHub.valid_tokens` gets
  ``401 Invalid credentials in Authorization header`` (like the real Hub); writes without a token get ``401``.
* **server down** -- :meth:`FakeHub.stop` closes the listening socket (connections are refused);
  :meth:`FakeHub.start` brings it back on the *same* port with the repositories it held before.

Only the standard library is used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeHub", "git_blob_sha1"]

INVALID_CREDENTIALS = "Invalid credentials in Authorization header"


def git_blob_sha1(data: bytes) -> str:
    """Git blob object id of ``data`` (what ``git hash-object`` prints, and the Hub's ETag for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class _Commit:
    oid: str
    title: str
    files: dict[str, bytes]
    date: str


@dataclass
class _Repo:
    repo_id: str
    private: bool = False
    commits: list[_Commit] = field(default_factory=list)

    @property
    def head(self) -> _Commit:
        return self.commits[-1]

    def at(self, revision: str) -> _Commit | None:
        """Commit for a branch name (only ``main``) or a (possibly abbreviated, >= 7 chars) commit sha."""
        if revision == "main":
            return self.head
        if len(revision) >= 7:
            for commit in reversed(self.commits):
                if commit.oid.startswith(revision):
                    return commit
        return None


class _HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}


class FakeHub:
    """In-memory fake Hub server on ``127.0.0.1`` (random free port, kept across :meth:`stop`/:meth:`start`).

    Args:
        valid_tokens: tokens accepted for authenticated calls. Writes require one of them.
        user: the user name ``whoami`` reports.

    Use as a context manager or call :meth:`start` / :meth:`stop` explicitly. :attr:`endpoint` is the base URL to
    pass as ``endpoint=`` to ``HfApi``/``snapshot_download`` (or to patch ``huggingface_hub.constants.ENDPOINT``).
    """

    def __init__(self, valid_tokens: set[str] | tuple[str, ...] = ("hf_valid_test_token",), user: str = "tester"):
        self.valid_tokens: set[str] = set(valid_tokens)
        self.user = user
        self.repos: dict[str, _Repo] = {}
        self.request_log: list[tuple[str, str, int]] = []
        self.unhandled: list[tuple[str, str]] = []
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            self.port: int = sock.getsockname()[1]

    # ------------------------------------------------------------------ lifecycle
    @property
    def endpoint(self) -> str:
        """Base URL of the server, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_running(self) -> bool:
        return self._server is not None

    def start(self) -> FakeHub:
        """Start (or restart) serving on :attr:`port`. Repositories survive a stop/start cycle."""
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        last_error: OSError | None = None
        for _ in range(50):  # the port may linger briefly after a stop
            try:
                server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
                break
            except OSError as err:
                last_error = err
                time.sleep(0.1)
        else:
            raise RuntimeError(f"FakeHub could not bind 127.0.0.1:{self.port}") from last_error
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving: afterwards connections to :attr:`endpoint` are refused."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helpers for tests
    def patch_huggingface_hub(self, monkeypatch: Any, hf_home: str | os.PathLike[str] | None = None) -> None:
        """Point ``huggingface_hub``'s import-time constants at this server (pytest ``monkeypatch``).

        ``huggingface_hub`` reads ``HF_ENDPOINT`` once at import, into ``constants.ENDPOINT`` *and*
        ``constants.HUGGINGFACE_CO_URL_TEMPLATE`` (used by ``hf_hub_url``): both must be patched, otherwise file
        downloads would still target huggingface.co. Offline mode is switched off for the same reason.

        With ``hf_home``, every path constant under the current ``HF_HOME`` (cache, token, stored tokens, xet
        cache, telemetry files...) is moved under ``hf_home`` too, and ``HF_TOKEN`` is unset, so that nothing
        leaks from or into the user's real Hugging Face home.
        """
        from huggingface_hub import constants

        if hf_home is not None:
            old_home, new_home = constants.HF_HOME, os.fspath(hf_home)
            for name, value in list(vars(constants).items()):
                if name.isupper() and isinstance(value, str) and value.startswith(old_home):
                    monkeypatch.setattr(constants, name, new_home + value[len(old_home) :])
            monkeypatch.setenv("HF_HOME", new_home)
            monkeypatch.delenv("HF_TOKEN", raising=False)
            monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", self.endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", self.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Files of ``repo_id`` at ``revision`` (``{path: content}``); raises ``KeyError`` if unknown."""
        with self._lock:
            commit = self.repos[repo_id].at(revision)
            if commit is None:
                raise KeyError(revision)
            return dict(commit.files)

    def paths_requested(self) -> list[str]:
        """The ``METHOD path`` of every request received, in order."""
        return [f"{method} {path}" for method, path, _ in self.request_log]

    # ------------------------------------------------------------------ auth
    def _token(self, handler: BaseHTTPRequestHandler) -> str | None:
        auth = handler.headers.get("Authorization")
        if not auth:
            return None
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _HTTPError(401, INVALID_CREDENTIALS)
        return token.strip()

    def _check_auth(self, handler: BaseHTTPRequestHandler, *, write: bool) -> None:
        token = self._token(handler)
        if token is not None and token not in self.valid_tokens:
            raise _HTTPError(401, INVALID_CREDENTIALS)
        if token is None and write:
            raise _HTTPError(401, "You must be authenticated to perform this action (no token was sent)")

    def _repo(self, handler: BaseHTTPRequestHandler, repo_id: str) -> _Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and self._token(handler) not in self.valid_tokens):
            raise _HTTPError(404, "Repository not found", code="RepoNotFound")
        return repo

    @staticmethod
    def _commit(repo: _Repo, revision: str) -> _Commit:
        commit = repo.at(revision)
        if commit is None:
            raise _HTTPError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ routes
    def handle(self, handler: _Handler, method: str) -> tuple[int, dict[str, str], bytes]:
        """Dispatch one request; returns ``(status, headers, body)``."""
        url = urlsplit(handler.path)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with self._lock:
            if method == "POST" and path == "/api/repos/create":
                return self._create_repo(handler)
            if method == "POST" and path == "/api/validate-yaml":
                return self._validate_yaml(handler)
            if method == "GET" and path == "/api/agent-harnesses":  # best-effort telemetry registry
                return _json(200, {"standardEnvVars": [], "harnesses": {}})
            if method == "GET" and path == "/api/whoami-v2":
                self._check_auth(handler, write=True)
                return _json(200, {"type": "user", "name": self.user, "auth": {"type": "access_token"}})
            m = re.fullmatch(r"/api/models/(.+?)/(preupload|commit|revision|tree)/([^/]+)(?:/(.*))?", path)
            if m:
                repo_id, op, revision, sub = unquote(m[1]), m[2], unquote(m[3]), unquote(m[4] or "")
                if op == "preupload" and method == "POST":
                    return self._preupload(handler, repo_id, revision)
                if op == "commit" and method == "POST":
                    return self._do_commit(handler, repo_id, revision, query)
                if op == "revision" and method == "GET":
                    return self._repo_info(handler, repo_id, revision)
                if op == "tree" and method == "GET":
                    return self._tree(handler, repo_id, revision, sub, query)
            m = re.fullmatch(r"/api/models/([^/]+(?:/[^/]+)?)", path)
            if m and method == "GET":
                return self._repo_info(handler, unquote(m[1]), "main")
            m = re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path)
            if m and method in ("GET", "HEAD"):
                return self._resolve(handler, unquote(m[1]), unquote(m[2]), unquote(m[3]))
        self.unhandled.append((method, handler.path))
        raise _HTTPError(404, f"FakeHub does not implement {method} {path}")

    def _create_repo(self, handler: _Handler) -> tuple[int, dict[str, str], bytes]:
        self._check_auth(handler, write=True)
        payload = handler.json_body()
        if payload.get("type") not in (None, "model"):
            raise _HTTPError(400, "FakeHub only supports model repositories")
        name, organization = payload.get("name"), payload.get("organization")
        if not name:
            raise _HTTPError(400, "Missing repository name")
        repo_id = f"{organization or self.user}/{name}"
        if repo_id in self.repos:
            # like the Hub, the 409 body still carries the repo url (``create_repo(exist_ok=True)`` reads it)
            raise _HTTPError(409, "You already created this model repo", extra={"url": f"{self.endpoint}/{repo_id}"})
        repo = _Repo(repo_id=repo_id, private=payload.get("visibility") == "private" or bool(payload.get("private")))
        gitattributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        repo.commits.append(
            _Commit(_new_oid(repo_id, "initial"), "initial commit", {".gitattributes": gitattributes}, _now())
        )
        self.repos[repo_id] = repo
        return _json(200, {"url": f"{self.endpoint}/{repo_id}", "name": repo_id, "id": _new_oid(repo_id)[:24]})

    def _validate_yaml(self, handler: _Handler) -> tuple[int, dict[str, str], bytes]:
        self._check_auth(handler, write=False)
        content = handler.json_body().get("content", "")
        errors: list[dict[str, str]] = []
        if content.startswith("---"):
            end = content.find("\n---", 3)
            if end == -1:
                errors.append({"message": "Unterminated YAML front matter"})
            else:
                try:
                    import yaml  # PyYAML is a dependency of huggingface_hub / transformers

                    meta = yaml.safe_load(content[3:end])
                    if meta is not None and not isinstance(meta, dict):
                        errors.append({"message": "YAML metadata must be a mapping"})
                except Exception as err:  # noqa: BLE001 - report any YAML error to the client
                    errors.append({"message": f"Invalid YAML: {err}"})
        status = 400 if errors else 200
        return _json(status, {"errors": errors, "warnings": []})

    def _preupload(self, handler: _Handler, repo_id: str, revision: str) -> tuple[int, dict[str, str], bytes]:
        self._check_auth(handler, write=True)
        repo = self._repo(handler, repo_id)
        commit = self._commit(repo, revision)
        files = []
        for entry in handler.json_body().get("files", []):
            existing = commit.files.get(entry["path"])
            files.append(
                {
                    "path": entry["path"],
                    "uploadMode": "regular",  # never LFS / Xet: contents travel base64-inline in the commit
                    "shouldIgnore": False,
                    "oid": git_blob_sha1(existing) if existing is not None else None,
                }
            )
        return _json(200, {"files": files, "commitOid": commit.oid})

    def _do_commit(
        self, handler: _Handler, repo_id: str, revision: str, query: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        self._check_auth(handler, write=True)
        repo = self._repo(handler, repo_id)
        parent = self._commit(repo, revision)
        if revision != "main":
            raise _HTTPError(400, "FakeHub only supports committing to 'main'")
        if query.get("create_pr"):
            raise _HTTPError(400, "FakeHub does not support pull requests")
        files = dict(parent.files)
        title = "commit"
        for line in handler.body().splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                title = value.get("summary") or title
                wanted_parent = value.get("parentCommit")
                if wanted_parent and not parent.oid.startswith(wanted_parent):
                    raise _HTTPError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise _HTTPError(400, f"Unsupported encoding {value.get('encoding')}")
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                for path in [p for p in files if p.startswith(prefix)]:
                    del files[path]
            else:  # lfsFile and anything newer: not supported (preupload never asks for LFS)
                raise _HTTPError(400, f"FakeHub does not support commit operation {key!r}")
        commit = _Commit(_new_oid(repo_id, title, str(len(repo.commits))), title, files, _now())
        repo.commits.append(commit)
        return _json(
            200,
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.endpoint}/{repo_id}/commit/{commit.oid}",
                "pullRequestUrl": None,
            },
        )

    def _repo_info(self, handler: _Handler, repo_id: str, revision: str) -> tuple[int, dict[str, str], bytes]:
        self._check_auth(handler, write=False)
        repo = self._repo(handler, repo_id)
        commit = self._commit(repo, revision)
        siblings = [{"rfilename": path} for path in sorted(commit.files)]
        return _json(
            200,
            {
                "_id": _new_oid(repo_id)[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.oid,
                "lastModified": commit.date,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "tags": [],
                "siblings": siblings,
            },
        )

    def _tree(
        self, handler: _Handler, repo_id: str, revision: str, sub: str, query: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        self._check_auth(handler, write=False)
        repo = self._repo(handler, repo_id)
        commit = self._commit(repo, revision)
        recursive = query.get("recursive", "false").lower() in ("1", "true")
        prefix = sub.strip("/") + "/" if sub.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise _HTTPError(404, f"{sub} does not exist on {revision}", code="EntryNotFound")
        entries: dict[str, dict[str, Any]] = {}
        for path, content in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rel_parts = path[len(prefix) :].split("/")
            # folders on the way
            for depth in range(1, len(rel_parts)):
                folder = prefix + "/".join(rel_parts[:depth])
                if depth > 1 and not recursive:
                    break
                entries.setdefault(folder, {"type": "directory", "path": folder, "oid": _new_oid(commit.oid, folder)})
            if len(rel_parts) == 1 or recursive:
                entries[path] = {"type": "file", "path": path, "size": len(content), "oid": git_blob_sha1(content)}
        return _json(200, list(entries.values()))

    def _resolve(self, handler: _Handler, repo_id: str, revision: str, filename: str) -> tuple[int, dict, bytes]:
        self._check_auth(handler, write=False)
        repo = self._repo(handler, repo_id)
        commit = self._commit(repo, revision)
        content = commit.files.get(filename)
        if content is None:
            raise _HTTPError(404, "Entry not found", code="EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_sha1(content)}"',
            "Accept-Ranges": "bytes",
        }
        byte_range = handler.headers.get("Range")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", byte_range or "")
        if m:
            start = int(m[1])
            stop = int(m[2]) + 1 if m[2] else len(content)
            headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(content)}"
            return 206, headers, content[start:stop]
        return 200, headers, content


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # bound per server in FakeHub.start
    server_version = "FakeHub/1.0"
    protocol_version = "HTTP/1.0"  # one request per connection: nothing stale survives a stop/start

    _cached_body: bytes | None = None

    def body(self) -> bytes:
        if self._cached_body is None:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self._cached_body = b"".join(chunks)
            else:
                self._cached_body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        return self._cached_body

    def json_body(self) -> dict[str, Any]:
        raw = self.body()
        return json.loads(raw) if raw else {}

    def _serve(self, method: str) -> None:
        try:
            status, headers, body = self.hub.handle(self, method)
        except _HTTPError as err:
            status = err.status
            headers = {"Content-Type": "application/json", "X-Error-Message": err.message, **err.headers}
            if err.code:
                headers["X-Error-Code"] = err.code
            body = json.dumps({"error": err.message, **err.extra}).encode()
        except Exception as err:  # noqa: BLE001 - a bug in the fake must surface as a 500, not a hang
            status, headers = 500, {"Content-Type": "application/json"}
            body = json.dumps({"error": f"FakeHub internal error: {err!r}"}).encode()
        self.hub.request_log.append((method, self.path, status))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._serve("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr access logs
        pass


def _json(status: int, obj: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(obj).encode()


def _new_oid(*parts: str) -> str:
    return hashlib.sha1("\0".join((*parts, repr(time.monotonic_ns()))).encode()).hexdigest()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
