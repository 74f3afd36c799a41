"""A fake Hugging Face Hub on 127.0.0.1: just the endpoints huggingface_hub's client uses to push and pull.

whoami-v2, repos/create, validate-yaml, preupload ("regular" mode), commit (NDJSON, base64 files), branch,
Space variables, revision info and resolve (HEAD/GET with X-Repo-Commit, ETag, X-Linked-Etag/Size).
Commits get real 40-hex shas; every request is logged so tests can assert what was (never) asked for.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

import yaml

# The account the tests push as, and the model repo they push to.
TOKEN = "hf_TestSecretToken0123456789abcdef"
USER = "alice"
REPO = "alice/snakes"
LFS_SUFFIXES = (".safetensors", ".pkl", ".png", ".bin", ".pt")


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)


@dataclass
class Request:
    method: str
    path: str
    authorization: str | None


class FakeHub:
    """Start with `with FakeHub(tokens={...}) as hub:`; hub.url is the endpoint."""

    def __init__(self, tokens: dict[str, str] | None = None):
        self.tokens = tokens or {}  # token -> user name
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._counter = itertools.count()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # -- lifecycle
    def start(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    # -- state helpers for tests
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def head(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> str:
        return self.repo(repo_id, repo_type).branches[branch]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        r = self.repo(repo_id, repo_type)
        return r.commits[r.branches.get(revision, revision)]

    def paths_requested(self) -> list[str]:
        return [r.path for r in self.requests]

    def new_commit(self, repo: Repo, parent: str | None, files: dict[str, bytes], summary: str) -> str:
        h = hashlib.sha1(f"{parent}|{summary}|{next(self._counter)}".encode())
        for name in sorted(files):
            h.update(name.encode() + hashlib.sha256(files[name]).digest())
        sha = h.hexdigest()
        repo.commits[sha] = dict(files)
        return sha

    def create(self, repo_id: str, repo_type: str = "model", private: bool = False) -> Repo:
        repo = Repo(repo_type, repo_id, private)
        repo.branches["main"] = self.new_commit(repo, None, {".gitattributes": b"*.safetensors filter=lfs\n"}, "init")
        self.repos[(repo_type, repo_id)] = repo
        return repo


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeHub

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    # -- plumbing
    def _body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, ctype="application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, code: str | None, message: str, headers: dict | None = None) -> None:
        h = dict(headers or {})
        if code:
            h["X-Error-Code"] = code
        h["X-Error-Message"] = message
        self._json(status, {"error": message}, h)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization") or ""
        return self.fake.tokens.get(auth[7:]) if auth.startswith("Bearer ") else None

    def _segments(self) -> list[str]:
        return [unquote(s) for s in urlsplit(self.path).path.split("/") if s]

    def _log(self) -> None:
        with self.fake.lock:
            self.fake.requests.append(
                Request(self.command, unquote(urlsplit(self.path).path), self.headers.get("Authorization"))
            )

    def _find(self, repo_type: str, repo_id: str, write: bool) -> Repo | None:
        """The repo, or None after answering 401/404 like the Hub (a private repo is 'not found' to others)."""
        user = self._user()
        if write and user is None:
            self._error(401, None, "Invalid credentials in Authorization header")
            return None
        repo = self.fake.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user is None):
            self._error(404, "RepoNotFound", "Repository not found")
            return None
        return repo

    # -- verbs
    def do_HEAD(self) -> None:
        self._log()
        self._resolve()

    def do_GET(self) -> None:
        self._log()
        s = self._segments()
        if s[:2] == ["api", "whoami-v2"]:
            user = self._user()
            if user is None:
                return self._error(401, None, "Invalid credentials in Authorization header")
            return self._json(200, {"type": "user", "name": user, "auth": {"accessToken": {"role": "write"}}})
        if len(s) >= 4 and s[0] == "api" and s[1] in ("models", "spaces", "datasets"):
            return self._info(s[1][:-1], f"{s[2]}/{s[3]}", s[5] if len(s) >= 6 and s[4] == "revision" else "main")
        return self._resolve()

    def do_POST(self) -> None:
        self._log()
        s = self._segments()
        body = self._body()
        if s == ["api", "repos", "create"]:
            return self._create(json.loads(body))
        if s == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body))
        if len(s) >= 5 and s[0] == "api" and s[1] in ("models", "spaces", "datasets"):
            repo_type, repo_id, action = s[1][:-1], f"{s[2]}/{s[3]}", s[4]
            rev = s[5] if len(s) >= 6 else "main"
            with self.fake.lock:
                repo = self._find(repo_type, repo_id, write=True)
                if repo is None:
                    return None
                if action == "preupload":
                    files = json.loads(body)["files"]
                    out = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                    return self._json(200, {"files": out})
                if action == "commit":
                    return self._commit(repo, rev, body)
                if action == "branch":
                    return self._branch(repo, rev, json.loads(body or b"{}"))
                if action == "variables":
                    d = json.loads(body)
                    repo.variables[d["key"]] = d["value"]
                    return self._json(200, {k: {"value": v} for k, v in repo.variables.items()})
        return self._error(404, None, f"no such endpoint {self.path}")

    # -- endpoints
    def _create(self, d: dict) -> None:
        user = self._user()
        if user is None:
            return self._error(401, None, "Invalid credentials in Authorization header")
        repo_type = d.get("type") or "model"
        repo_id = f"{d.get('organization') or user}/{d['name']}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"http://{self.headers['Host']}/{prefix}{repo_id}"
        with self.fake.lock:
            if (repo_type, repo_id) in self.fake.repos:
                msg = "You already created this model repo"
                return self._json(409, {"error": msg, "url": url}, {"X-Error-Message": msg})
            self.fake.create(repo_id, repo_type, private=d.get("visibility") == "private" or bool(d.get("private")))
        return self._json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, d: dict) -> None:
        text = d.get("content", "")
        errors = []
        if text.startswith("---"):
            try:
                meta = yaml.safe_load(text.split("---", 2)[1])
                if not isinstance(meta, dict):
                    errors.append({"message": "metadata must be a mapping"})
            except (yaml.YAMLError, IndexError) as e:
                errors.append({"message": f"invalid YAML: {e}"})
        if errors:
            return self._json(400, {"errors": errors, "warnings": []})
        return self._json(200, {"errors": [], "warnings": []})

    def _commit(self, repo: Repo, branch: str, body: bytes) -> None:
        if branch not in repo.branches:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {branch}")
        parent = repo.branches[branch]
        files = dict(repo.commits[parent])
        summary = ""
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                if value.get("parentCommit") and value["parentCommit"] != parent:
                    return self._error(412, None, "parent commit is not the head of the branch")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                files = {p: b for p, b in files.items() if p != value["path"] and not p.startswith(value["path"] + "/")}
            else:
                return self._error(400, None, f"fake hub does not support {key!r}")
        sha = self.fake.new_commit(repo, parent, files, summary)
        repo.branches[branch] = sha
        prefix = "" if repo.repo_type == "model" else f"{repo.repo_type}s/"
        url = f"http://{self.headers['Host']}/{prefix}{repo.repo_id}/commit/{sha}"
        return self._json(200, {"commitUrl": url, "commitOid": sha, "pullRequestUrl": None})

    def _branch(self, repo: Repo, branch: str, d: dict) -> None:
        if branch in repo.branches:
            return self._error(409, None, f"branch {branch} already exists")
        start = d.get("startingPoint") or "main"
        repo.branches[branch] = repo.branches.get(start, start)
        return self._json(200, {})

    def _commit_of(self, repo: Repo, revision: str) -> str | None:
        sha = repo.branches.get(revision, revision)
        return sha if sha in repo.commits else None

    def _info(self, repo_type: str, repo_id: str, revision: str) -> None:
        with self.fake.lock:
            repo = self._find(repo_type, repo_id, write=False)
            if repo is None:
                return None
            sha = self._commit_of(repo, revision)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            files = repo.commits[sha]
            return self._json(
                200,
                {
                    "id": repo_id,
                    "sha": sha,
                    "private": repo.private,
                    "siblings": [{"rfilename": p} for p in sorted(files)],
                    "tags": [],
                },
            )

    def _resolve(self) -> None:
        s = self._segments()
        repo_type = "model"
        if s and s[0] in ("spaces", "datasets"):
            repo_type, s = s[0][:-1], s[1:]
        if len(s) < 5 or s[2] != "resolve":
            return self._error(404, None, f"no such endpoint {self.path}")
        repo_id, revision, filename = f"{s[0]}/{s[1]}", s[3], "/".join(s[4:])
        with self.fake.lock:
            repo = self._find(repo_type, repo_id, write=False)
            if repo is None:
                return None
            sha = self._commit_of(repo, revision)
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            data = repo.commits[sha].get(filename)
        if data is None:
            return self._error(404, "EntryNotFound", f"{filename} does not exist", {"X-Repo-Commit": sha})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{_git_sha1(data)}"'}
        if filename.endswith(LFS_SUFFIXES):
            headers.update({"X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"', "X-Linked-Size": str(len(data))})
        return self._send(200, data, headers, ctype="application/octet-stream")


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
