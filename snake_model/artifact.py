"""Save and load the artifact: model.safetensors + config.json. No pickle anywhere on this path."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .network import SnakeNet, build_network
from .spec import ModelSpec, SpecError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


class ArtifactError(ValueError):
    """The model directory cannot be served: missing files, wrong keys, wrong shape or wrong hash."""


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a regular file, streamed. Anything else (a FIFO would block, a device read forever) is an OSError
    before a byte is read: opened without blocking, then checked."""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json_object(path: str | Path) -> dict:
    """A JSON object from a file, or {} when the file is missing, unreadable or not an object (e.g. metrics.json)."""
    try:
        d = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: "[[[[..." nested too deeply to parse
        return {}
    return d if isinstance(d, dict) else {}


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape the weights and the preprocessing."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("torch", "timm", "fastai", "pillow", "safetensors", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _place(out: Path, name: str) -> str:
    """Move the finished out/<name>.tmp to out/<name> (readable by all) and return its sha256."""
    tmp = out / (name + ".tmp")
    sha = sha256_file(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / name)
    return sha


def save_artifact(
    model: SnakeNet, spec: ModelSpec, out_dir: str | Path, ood_bank=None, int8_graph: bytes | None = None
) -> Path:
    """Write model.safetensors, config.json (with the weights' sha256), the optional OOD feature bank and the optional
    int8 graph of the body (snake_model.quant)."""
    from .ood import OOD_FILE
    from .quant import INT8_FILE

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if int8_graph is not None:
        (out / (INT8_FILE + ".tmp")).write_bytes(int8_graph)
        spec.int8 = {"file": INT8_FILE, "sha256": _place(out, INT8_FILE)}
    if ood_bank is not None:
        bank = {"bank": torch.from_numpy(ood_bank).contiguous()}
        save_file(bank, str(out / (OOD_FILE + ".tmp")), metadata={"format": "pt"})
        spec.ood = {**spec.ood, "file": OOD_FILE, "sha256": _place(out, OOD_FILE)}
        spec.abstain_score = "knn"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    fd, tmp = tempfile.mkstemp(dir=out, suffix=".tmp")
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": "pt"})
        spec.weights_sha256 = sha256_file(tmp)
        spec.versions = spec.versions or library_versions()
        os.chmod(tmp, 0o644)
        os.replace(tmp, out / WEIGHTS)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    cfg_tmp = out / (CONFIG + ".tmp")
    spec.save(cfg_tmp)
    os.replace(cfg_tmp, out / CONFIG)
    return out


def load_spec(model_dir: str | Path) -> ModelSpec:
    """Read and validate config.json from a model directory."""
    try:
        return ModelSpec.load(Path(model_dir) / CONFIG)
    except SpecError as e:
        raise ArtifactError(str(e)) from e


def _header_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} from the safetensors header alone: no tensor data is read."""
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{weights} is not a readable safetensors file: {e}") from e


def _build(spec: ModelSpec, device: str | None = None) -> SnakeNet:
    """The network config.json describes, untrained; on the meta device it has shapes but no memory."""
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return build_network(
                spec.arch,
                len(spec.labels),
                head=spec.head,
                pretrained=False,
                tta_flip=spec.tta_flip,
                tta_zoom=spec.tta_zoom,
            )
    except ValueError as e:
        raise ArtifactError(f"config.json: {e}") from e
    except Exception as e:  # timm raises RuntimeError, KeyError, ... for what it cannot build
        raise ArtifactError(f"config.json: cannot build arch {spec.arch!r}: {type(e).__name__}: {e}") from e


def _check_fit(weights: Path, spec: ModelSpec, found: dict, expected: dict) -> None:
    """Every key present with the network's shape (found, expected: {name: shape}), or a clear ArtifactError."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    if missing or unexpected:
        raise ArtifactError(
            f"{weights} does not fit arch {spec.arch!r} with head {spec.head!r}: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    for key, shape in expected.items():
        if tuple(found[key]) != tuple(shape):
            if len(shape) >= 1 and key.startswith("head.") and shape[0] == len(spec.labels):
                raise ArtifactError(
                    f"config.json lists {len(spec.labels)} labels but the weights' classifier has "
                    f"{found[key][0] if found[key] else '?'} outputs; the label list and the weights do not belong "
                    "together"
                )
            raise ArtifactError(f"{weights}: tensor {key} has shape {tuple(found[key])}, expected {tuple(shape)}")


def load_artifact(model_dir: str | Path, *, verify_sha: bool = True) -> tuple[SnakeNet, ModelSpec]:
    """Rebuild the network and load its weights strictly; every mismatch is an ArtifactError.

    The weights' header is compared with the network built on the meta device (shapes, no memory) before anything
    is allocated, so a config.json naming a wrong or huge arch fails fast instead of building it.
    """
    model_dir = Path(model_dir)
    spec = load_spec(model_dir)
    weights = model_dir / WEIGHTS
    if not weights.is_file():
        raise ArtifactError(f"{weights} not found: a model directory needs {WEIGHTS} next to {CONFIG}")
    if verify_sha:
        actual = sha256_file(weights)
        if actual != spec.weights_sha256:
            raise ArtifactError(
                f"{weights}: sha256 {actual[:12]}... does not match config.json's {spec.weights_sha256[:12]}...; "
                "the weights were changed or corrupted after export. Re-download or re-export the model."
            )
    header = _header_shapes(weights)
    expected = {k: tuple(v.shape) for k, v in _build(spec, device="meta").state_dict().items()}
    _check_fit(weights, spec, header, expected)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"{weights} is not a readable safetensors file: {e}") from e
    for key, tensor in state.items():
        # a diverged run (fp16 overflow) writes NaN/inf: served, it answers "nan% confidence" and never abstains
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(
                f"{weights}: tensor {key} holds NaN or infinite values (training diverged?); "
                "the weights must hold finite numbers. Retrain or re-export the model."
            )
    model = _build(spec)
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError) as e:  # e.g. a dtype that cannot be copied into the parameter
        raise ArtifactError(f"{weights} does not load into arch {spec.arch!r}: {e}") from e
    model.eval()
    return model, spec


def feature_width(model_dir: str | Path, spec: ModelSpec) -> int | None:
    """The width of the network's pooled features, read from the weights' head shapes (no tensor is loaded)."""
    try:
        with safe_open(str(Path(model_dir) / WEIGHTS), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            if spec.head == "linear" and "head.fc.weight" in keys:
                return int(f.get_slice("head.fc.weight").get_shape()[1])  # Linear(nf, n_classes)
            if spec.head == "fastai" and "head.1.weight" in keys:
                return int(f.get_slice("head.1.weight").get_shape()[0]) // 2  # BatchNorm1d(2 * nf) after ConcatPool
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{model_dir}: cannot read {WEIGHTS}: {e}") from e
    return None


def load_ood_bank(model_dir: str | Path, spec: ModelSpec, model: SnakeNet | None = None):
    """The kNN feature bank as a float16 numpy array, sha256-checked; None when the spec has none.

    The bank's width must equal the network's feature width (model.body.num_features when the model is given,
    else read from the weights' head), or every kNN score would fail at request time.
    """
    if spec.abstain_score != "knn":
        return None
    f = Path(model_dir) / spec.ood.get("file", "ood.safetensors")
    if not f.is_file():
        raise ArtifactError(f"{f} not found: config.json asks for the kNN abstain score and its feature bank")
    if sha256_file(f) != spec.ood["sha256"]:
        raise ArtifactError(f"{f}: sha256 does not match config.json; the feature bank was changed after export")
    try:
        bank = load_file(str(f), device="cpu")["bank"]
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"{f} is not a valid feature bank: {e}") from e
    if bank.dim() != 2 or bank.shape[0] < 1:
        raise ArtifactError(f"{f}: the feature bank must be a non-empty 2-D tensor, got {tuple(bank.shape)}")
    if not bank.is_floating_point() or not bool(torch.isfinite(bank).all()):
        raise ArtifactError(f"{f}: the feature bank must hold finite floating-point numbers")
    width = getattr(getattr(model, "body", None), "num_features", None) if model is not None else None
    if width is None:
        width = feature_width(model_dir, spec)
    if width is not None and bank.shape[1] != int(width):
        raise ArtifactError(
            f"{f}: the feature bank has {bank.shape[1]} features per row but the network ({spec.arch!r}) gives "
            f"{int(width)}; the bank and the weights do not belong together"
        )
    return bank.numpy()


def load_int8_graph(model_dir: str | Path, spec: ModelSpec) -> bytes | None:
    """The body's int8 ONNX graph, sha256-checked and checked to be self-contained standard ONNX; None when the
    artifact has none."""
    if not spec.int8:
        return None
    from .quant import GraphError, check_graph

    f = Path(model_dir) / spec.int8["file"]
    if not f.is_file():
        raise ArtifactError(f"{f} not found: config.json names it as the network's int8 graph")
    try:
        graph = f.read_bytes()
    except OSError as e:
        raise ArtifactError(f"{f} cannot be read: {e}") from e
    if hashlib.sha256(graph).hexdigest() != spec.int8["sha256"]:
        raise ArtifactError(f"{f}: sha256 does not match config.json; the int8 graph was changed after export")
    try:
        check_graph(graph)
    except GraphError as e:
        raise ArtifactError(f"{f}: {e}") from e
    return graph
