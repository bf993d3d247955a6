"""A tiny in-memory fake of the Hugging Face Hub HTTP API, enough for ``create_repo``, ``create_commit`` and
``snapshot_download`` of small files (every upload is "regular": base64 inside the commit, no LFS or Xet).

``FakeHub.stop()`` refuses connections (server down); ``start()`` serves again on the same port with the same
repositories. Requests with a token not in ``valid_tokens`` get 401, as do writes without a token.
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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


def _sha1(*parts: bytes | str) -> str:
    return hashlib.sha1(b"\0".join(p.encode() if isinstance(p, str) else p for p in parts)).hexdigest()


def _blob_oid(data: bytes) -> str:
    """Git blob id of ``data``, the Hub's ``oid``/``ETag`` of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    """An HTTP error answer: status code and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FakeHub:
    """In-memory Hub on 127.0.0.1; ``commits[repo_id]`` is a list of ``(sha, {path: bytes})``, newest last."""

    def __init__(self, valid_tokens: set[str], user: str = "tester") -> None:
        self.valid_tokens, self.user = valid_tokens, user
        self.commits: dict[str, list[tuple[str, dict[str, bytes]]]] = {}
        self.unhandled: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        for _ in range(50):  # the port may linger briefly after a stop
            try:
                self._server = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
                break
            except OSError:
                time.sleep(0.1)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The files of ``repo_id`` at its newest commit."""
        return dict(self.commits[repo_id][-1][1])

    def patch_huggingface_hub(self, monkeypatch: Any, hf_home: os.PathLike[str]) -> None:
        """Point ``huggingface_hub`` (and 🤗 Transformers' shared ``HfApi``) at this server, with an empty HF home."""
        from huggingface_hub import constants
        from transformers.utils import hub as transformers_hub

        old_home, new_home = constants.HF_HOME, os.fspath(hf_home)
        for name, value in list(vars(constants).items()):
            if name.isupper() and isinstance(value, str) and value.startswith(old_home):
                monkeypatch.setattr(constants, name, new_home + value[len(old_home) :])
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HF_HOME", new_home)
        monkeypatch.setenv("HF_ENDPOINT", self.endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", self.endpoint)
        template = self.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(transformers_hub, "_hf_api", None)

    # ------------------------------------------------------------------ requests
    def _commit(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]]:
        for sha, files in reversed(self.commits.get(repo_id, [])):
            if revision in ("main", sha):
                return sha, files
        raise HubError(404, f"Repository {repo_id} or revision {revision} not found")

    def handle(self, method: str, path: str, token: str | None, body: bytes) -> tuple[int, dict[str, str], bytes]:
        """Answer one request: ``(status, headers, body)``."""
        if token is not None and token not in self.valid_tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        if method == "POST" and token is None:
            raise HubError(401, "You must be authenticated to perform this action")
        if path == "/api/repos/create":
            payload = json.loads(body)
            repo_id = f"{payload.get('organization') or self.user}/{payload['name']}"
            self.commits.setdefault(repo_id, [(_sha1(repo_id), {".gitattributes": b"*.safetensors filter=lfs\n"})])
            return _json({"url": f"{self.endpoint}/{repo_id}", "name": repo_id})
        if path == "/api/validate-yaml":
            return _json({"errors": [], "warnings": []})
        if m := re.fullmatch(r"/api/models/(.+)/(preupload|commit|revision|tree)/([^/]+)", path):
            repo_id, op, revision = unquote(m[1]), m[2], unquote(m[3])
            sha, files = self._commit(repo_id, revision)
            if op == "preupload":
                paths = [entry["path"] for entry in json.loads(body)["files"]]
                oids = {p: _blob_oid(files[p]) if p in files else None for p in paths}
                return _json({"files": [{"path": p, "uploadMode": "regular", "shouldIgnore": False, "oid": oids[p]}
                                        for p in paths], "commitOid": sha})  # fmt: skip
            if op == "commit":
                files = dict(files)
                for line in filter(None, body.splitlines()):
                    item = json.loads(line)
                    if item["key"] == "file":
                        files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                new_sha = _sha1(sha, repr(sorted(files.items())))
                self.commits[repo_id].append((new_sha, files))
                return _json({"commitOid": new_sha, "commitUrl": f"{self.endpoint}/{repo_id}/commit/{new_sha}"})
            if op == "revision":
                siblings = [{"rfilename": p} for p in sorted(files)]
                return _json({"id": repo_id, "sha": sha, "siblings": siblings, "private": False})
            return _json([{"type": "file", "path": p, "size": len(c), "oid": _blob_oid(c)} for p, c in files.items()])
        if m := re.fullmatch(r"/(.+?)/resolve/([^/]+)/(.+)", path):
            sha, files = self._commit(unquote(m[1]), unquote(m[2]))
            content = files.get(unquote(m[3]))
            if content is None:
                raise HubError(404, "Entry not found")
            return 200, {"X-Repo-Commit": sha, "ETag": f'"{_blob_oid(content)}"'}, content
        self.unhandled.append(f"{method} {path}")
        raise HubError(404, f"FakeHub does not implement {method} {path}")


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.0"  # one request per connection: nothing stale survives a stop/start

    def _body(self) -> bytes:
        if "chunked" not in self.headers.get("Transfer-Encoding", ""):
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        chunks = []
        while size := int(self.rfile.readline().split(b";")[0], 16):
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        self.rfile.readline()
        return b"".join(chunks)

    def _serve(self, method: str) -> None:
        auth = self.headers.get("Authorization", "")
        token = auth.partition(" ")[2].strip() or None
        try:
            status, headers, body = self.hub.handle(method, urlsplit(self.path).path, token, self._body())
        except HubError as err:
            status, headers = err.status, {"X-Error-Message": str(err)}
            body = json.dumps({"error": str(err)}).encode()
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        self._serve("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._serve("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - no access log on stderr
        pass


def _json(obj: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(obj).encode()
