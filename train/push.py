"""Publish an artifact to the Hugging Face Hub in one atomic commit, and optionally make a Space that serves it.

    python -m train.push runs/na4 --repo alice/snake-classifier
    python -m train.push runs/na4 --repo alice/snake-classifier --space alice/snakes
    python -m train.push runs/na4 --repo alice/snake-classifier --dry-run

The token comes from HF_TOKEN or `hf auth login`; it is checked with whoami before any work and never printed.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shlex
import sys
from pathlib import Path

from snake_model.artifact import CONFIG, WEIGHTS, ArtifactError, load_int8_graph, load_spec, sha256_file
from snake_model.hub import CARD_IMAGES, INT8_GRAPH, METRICS, OOD_BANK, REPO_ID, is_commit_sha

from .card import (
    ATTRIBUTION,
    DEFAULT_ENDPOINT,
    MANIFEST,
    PHOTO_MONTAGES,
    build_card,
    find_manifest,
    publishable_montages,
)

log = logging.getLogger(__name__)

PKL = "export.pkl"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPACE_FILES = ("app.py", "requirements.txt", "README.md")
SPACE_PACKAGE = "snake_model"
DRY_RUN_DIR = "push-dry-run"


class PushError(Exception):
    """A push cannot go ahead; the message says why and what to do."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.push",
        description="Push an artifact folder (model.safetensors, config.json, metrics.json, pictures, "
        "ATTRIBUTION.md and a generated model card) to a Hub model repo in ONE commit; optionally upload the app "
        "as a Space pinned to that commit. Token: HF_TOKEN or `hf auth login`, never printed.",
    )
    p.add_argument("artifact_dir", nargs="?", type=Path, help="folder written by train.fit (omit with --space only)")
    p.add_argument("--repo", required=True, help="model repo, OWNER/NAME (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repo (and Space) private")
    p.add_argument("--revision", "--branch", default="main", help="branch to commit to (created if missing)")
    p.add_argument("--message", default=None, help="commit message (default: a summary of the metrics)")
    p.add_argument("--data", type=Path, default=None, help="gather output folder with manifest.csv/ATTRIBUTION.md")
    p.add_argument(
        "--also-pkl",
        action="store_true",
        help=f"also upload fastai's {PKL}, written by `train.fit --recipe original --export-pkl` (for fastai users; "
        "the app never reads it)",
    )
    p.add_argument("--dry-run", action="store_true", help="write the card and the file list locally; send nothing")
    p.add_argument(
        "--dry-run-dir", type=Path, default=None, help=f"where --dry-run writes (default ARTIFACT_DIR/{DRY_RUN_DIR})"
    )
    p.add_argument("--endpoint", default=None, help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    p.add_argument(
        "--space", default=None, help="also upload app.py, snake_model/, requirements.txt, README.md to this Space"
    )
    p.add_argument(
        "--model-revision",
        default=None,
        help="with --space and no ARTIFACT_DIR: the model commit to pin (default: head)",
    )
    p.add_argument(
        "--app-dir", type=Path, default=PROJECT_ROOT, help="folder holding app.py and snake_model/ (default: this repo)"
    )
    return p


def scrub(text: str, token: str | None) -> str:
    """Remove the token from any text that may be shown."""
    return text.replace(token, "hf_***") if token else text


def check_data_dir(data_dir: Path | None) -> None:
    """--data, when given, must be a gather output folder holding manifest.csv: a typo must stop the push, not
    publish a card whose sources and licences are "unknown". Checked before anything is sent."""
    if data_dir is None:
        return
    fix = f"point --data at the folder gather wrote (the one holding {MANIFEST}), or drop --data; nothing was sent"
    if not data_dir.exists():
        raise PushError(f"--data {data_dir} does not exist: {fix}")
    if not data_dir.is_dir():
        hint = f" (its folder is {data_dir.parent})" if data_dir.name == MANIFEST else ""
        raise PushError(f"--data {data_dir} is a file, not a folder{hint}: {fix}")
    if not (data_dir / MANIFEST).is_file():
        raise PushError(
            f"--data {data_dir} holds no {MANIFEST}, so it is not a gather output folder: the card could name no "
            f"sources or licences and no photo montage could be published. {fix[0].upper()}{fix[1:]}"
        )


def model_files(artifact_dir: Path, data_dir: Path | None, also_pkl: bool) -> dict[str, Path]:
    """path_in_repo -> local file, checked: weights match config.json, nothing missing that is required."""
    if not artifact_dir.is_dir():
        raise PushError(f"{artifact_dir} is not a directory; give the folder written by train.fit")
    missing = [f for f in (WEIGHTS, CONFIG, METRICS) if not (artifact_dir / f).is_file()]
    if missing:
        raise PushError(f"{artifact_dir} lacks {', '.join(missing)}; train.fit writes them")
    spec = load_spec(artifact_dir)
    actual = sha256_file(artifact_dir / WEIGHTS)
    if actual != spec.weights_sha256:
        raise PushError(f"{artifact_dir / WEIGHTS} does not match the sha256 in config.json; re-export the artifact")
    try:
        load_int8_graph(artifact_dir, spec)  # the graph the app would serve: hash and operators, before any upload
    except ArtifactError as e:
        raise PushError(f"{e}; re-train or re-export the artifact (nothing was sent)") from None
    files = {
        f: artifact_dir / f
        for f in (WEIGHTS, CONFIG, OOD_BANK, INT8_GRAPH, METRICS, *CARD_IMAGES)
        if (artifact_dir / f).is_file()
    }
    allowed = publishable_montages(artifact_dir, data_dir)
    why = (
        "that the gather manifest does not mark publishable"
        if find_manifest(artifact_dir, data_dir) is not None
        else f"and no gather manifest says they may be published (give --data, the folder holding {MANIFEST})"
    )
    for f in PHOTO_MONTAGES:  # pictures made of training photos: only when every photo in them may be published
        if f in files and f not in allowed:
            del files[f]
            print(f"not uploading {f}: it shows training photos {why}")
    for d in (artifact_dir, data_dir):
        if d is not None and (d / ATTRIBUTION).is_file():
            files[ATTRIBUTION] = d / ATTRIBUTION
            break
    if also_pkl:
        if not (artifact_dir / PKL).is_file():
            raise PushError(
                f"--also-pkl: {artifact_dir / PKL} not found; train.fit writes it only with --recipe original "
                f"--export-pkl (run the fit again with it, or push without --also-pkl)"
            )
        files[PKL] = artifact_dir / PKL
    return files


def space_files(app_dir: Path) -> dict[str, Path]:
    """The files a Space needs: app.py, requirements.txt, README.md and the snake_model package (sources only)."""
    missing = [f for f in (*SPACE_FILES, SPACE_PACKAGE) if not (app_dir / f).exists()]
    if missing:
        raise PushError(f"{app_dir} lacks {', '.join(missing)}; run from the project checkout or pass --app-dir")
    files = {f: app_dir / f for f in SPACE_FILES}
    for p in sorted((app_dir / SPACE_PACKAGE).rglob("*")):
        if p.is_file() and "__pycache__" not in p.parts and p.suffix in {".py", ".json", ".txt", ".md"}:
            files[p.relative_to(app_dir).as_posix()] = p
    return files


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_dry_run(out: Path, card: str, files: dict[str, Path], args) -> None:
    """The card and the list of what would be sent, with sizes and sha256."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(card, encoding="utf-8")
    lines = [f"# would commit to {args.repo}@{args.revision} ({'private' if args.private else 'public'})"]
    for name, path in sorted(files.items()):
        lines.append(f"{name}\t{path.stat().st_size}\t{sha256_file(path)}\t{path}")
    data = card.encode()
    lines.append(f"README.md\t{len(data)}\t{_sha256_bytes(data)}\t(generated)")
    (out / "files.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def get_token() -> str | None:
    """HF_TOKEN, else the token saved by `hf auth login`."""
    from huggingface_hub import get_token as hf_get_token

    return hf_get_token()


def check_token(api, token: str | None, endpoint: str) -> str:
    """whoami against the endpoint; the user name, or a PushError that never contains the token."""
    from huggingface_hub.errors import HfHubHTTPError

    if not token:
        raise PushError("no Hugging Face token: set HF_TOKEN (a write token) or run `hf auth login`")
    try:
        who = api.whoami(token=token)
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status in (401, 403):
            raise PushError(
                f"{endpoint} rejected the token (HTTP {status}): check HF_TOKEN or `hf auth login`"
            ) from None
        raise PushError(f"token check against {endpoint} failed with HTTP {status}") from None
    except Exception as e:
        raise PushError(f"cannot reach {endpoint} to check the token ({type(e).__name__})") from None
    return who.get("name", "?")


def _repo_files(api, repo: str, revision: str) -> set[str]:
    try:
        return {s.rfilename for s in (api.model_info(repo, revision=revision).siblings or [])}
    except Exception:  # noqa: BLE001 - a new branch or repo has nothing to clean up
        return set()


def push_model(api, args, files: dict[str, Path], card: str) -> str:
    """Create the repo (and branch) if needed; one commit with every file. Returns the commit sha."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    api.create_repo(args.repo, private=args.private, exist_ok=True)
    if args.private and getattr(api.model_info(args.repo), "private", None) is False:
        raise PushError(
            f"{args.repo} already exists and is public: --private cannot change that, and nothing was uploaded. "
            "Make it private in its Settings on the Hub first, or push without --private."
        )
    if args.revision != "main":
        api.create_branch(args.repo, branch=args.revision, exist_ok=True)
    ops = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(path)) for name, path in sorted(files.items())]
    ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode()))
    # a photo montage an earlier push uploaded, that may not be published with this one, goes in the same commit
    absent = [f for f in PHOTO_MONTAGES if f not in files]
    there = _repo_files(api, args.repo, args.revision) if absent else set()
    stale = [f for f in absent if f in there]
    ops += [CommitOperationDelete(path_in_repo=f) for f in stale]
    info = api.create_commit(args.repo, ops, commit_message=args.message, revision=args.revision)
    return info.oid


def push_space(api, args, model_revision: str) -> str:
    """Upload the app as a Gradio Space and point it at the model commit."""
    from huggingface_hub import CommitOperationAdd

    files = space_files(args.app_dir)
    api.create_repo(args.space, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True)
    if args.private and getattr(api.space_info(args.space), "private", None) is False:
        raise PushError(
            f"Space {args.space} already exists and is public: --private cannot change that, and the app was not "
            "uploaded. Make it private in its Settings on the Hub first, or push without --private."
        )
    ops = [
        CommitOperationAdd(
            path_in_repo=n,
            path_or_fileobj=space_readme(p.read_text(encoding="utf-8"), args.repo).encode()
            if n == "README.md"
            else str(p),
        )
        for n, p in sorted(files.items())
    ]
    if args.private:
        print(
            f"note: a private model needs a token in the Space to be pulled: add HF_TOKEN as a secret of {args.space} "
            "(Settings > Variables and secrets)"
        )
    info = api.create_commit(
        args.space, ops, repo_type="space", commit_message=f"App serving {args.repo}@{model_revision[:12]}"
    )
    api.add_space_variable(args.space, "MODEL_REPO", args.repo, description="model repo the app pulls")
    api.add_space_variable(args.space, "MODEL_REVISION", model_revision, description="pinned model commit")
    from huggingface_hub import constants

    endpoint = (args.endpoint or constants.ENDPOINT).rstrip("/")
    if endpoint != DEFAULT_ENDPOINT:  # a Hub of its own: the app must pull from it, not huggingface.co
        api.add_space_variable(args.space, "HF_ENDPOINT", endpoint, description="Hub the app pulls the model from")
    return info.oid


def space_readme(text: str, model_repo: str) -> str:
    """The app's README with the front matter's `models:` list naming the model this Space serves."""
    import re

    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return text
    end = text.index("\n---", 4)
    front, rest = text[4:end], text[end:]
    front = re.sub(r"(?m)^models:\n(?:[ \t]+-.*\n?)*", "", front).rstrip("\n")
    return f"---\n{front}\nmodels:\n  - {model_repo}{rest}"


def serve_command(repo: str, revision: str, endpoint: str) -> str:
    """The shell line that runs the app on this model: HF_ENDPOINT too when the Hub is not huggingface.co (the app
    reads it; without it, it would look for the model on huggingface.co)."""
    env = {"MODEL_REPO": repo, "MODEL_REVISION": revision}
    if endpoint.rstrip("/") != DEFAULT_ENDPOINT:
        env = {"HF_ENDPOINT": endpoint.rstrip("/"), **env}
    return " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " python app.py"


def default_message(artifact_dir: Path) -> str:
    import json

    try:
        err = json.loads((artifact_dir / METRICS).read_text(encoding="utf-8"))["valid_error"]
        return f"Model artifact: valid error {err:.1%}"
    except (OSError, ValueError, KeyError, TypeError):
        return "Model artifact"


def run(args, token: str | None) -> int:
    from huggingface_hub import HfApi, constants

    endpoint = (args.endpoint or constants.ENDPOINT).rstrip("/")
    if not REPO_ID.fullmatch(args.repo):
        raise PushError(f"--repo {args.repo!r} is not of the form OWNER/NAME")
    if args.space and not REPO_ID.fullmatch(args.space):
        raise PushError(f"--space {args.space!r} is not of the form OWNER/NAME")
    if is_commit_sha(args.revision):
        raise PushError("--revision is the branch to commit to, not a commit sha")
    if args.artifact_dir is None and not args.space:
        raise PushError("give ARTIFACT_DIR (the folder written by train.fit), or --space to upload only the app")
    check_data_dir(args.data)
    if args.dry_run:
        if args.artifact_dir is None:
            raise PushError("--dry-run needs ARTIFACT_DIR")
        files = model_files(args.artifact_dir, args.data, args.also_pkl)
        card = build_card(args.artifact_dir, args.repo, args.data, for_upload=True, endpoint=endpoint)
        out = args.dry_run_dir or args.artifact_dir / DRY_RUN_DIR
        write_dry_run(out, card, files, args)
        print(f"dry run: nothing sent. Card and file list in {out}/ ({len(files) + 1} files would be committed)")
        print(f"token: {'found' if token else 'NOT found (set HF_TOKEN or run `hf auth login`)'}")
        return 0

    api = HfApi(endpoint=endpoint, token=token)
    user = check_token(api, token, endpoint)  # before any work
    print(f"authenticated to {endpoint} as {user}")
    model_revision = args.model_revision
    if args.artifact_dir is not None:
        files = model_files(args.artifact_dir, args.data, args.also_pkl)
        card = build_card(args.artifact_dir, args.repo, args.data, for_upload=True, endpoint=endpoint)
        args.message = args.message or default_message(args.artifact_dir)
        model_revision = push_model(api, args, files, card)
        print(f"pushed {len(files) + 1} files to {endpoint}/{args.repo} in commit {model_revision}")
        print(f"serve it with: {serve_command(args.repo, model_revision, endpoint)}")
    if args.space:
        if model_revision is None:
            model_revision = api.model_info(args.repo, revision=args.revision).sha
        if not is_commit_sha(model_revision or ""):
            raise PushError(f"--model-revision {model_revision!r} is not a 40-hex commit sha")
        sha = push_space(api, args, model_revision)
        print(f"Space {endpoint}/spaces/{args.space} at commit {sha}, serving {args.repo}@{model_revision}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    token = get_token()
    try:
        return run(args, token)
    except (PushError, ArtifactError) as e:
        print(f"error: {scrub(str(e), token)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; every commit is atomic, so each repo is either at its old commit or fully at the new one "
            "(with --space, the model commit may be done while the Space was not updated: run the push again)",
            file=sys.stderr,
        )
        return 130
    except Exception as e:  # Hub HTTP errors and the like: one line, token scrubbed, no traceback
        print(f"error: {type(e).__name__}: {scrub(str(e), token)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
