"""Frozen backbone features, cached on disk: the fast path for heads, probes and cleaning."""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from snake_model.loader import ImageLoadError, load_image
from snake_model.network import DEFAULT_ARCH, SnakeNet, build_network
from snake_model.preprocess import preprocess
from snake_model.spec import ModelSpec

log = logging.getLogger(__name__)


def _cache_key(paths: Sequence[Path], arch: str, size: int, resize: str, flip: bool) -> str:
    h = hashlib.sha256(f"{arch}|{size}|{resize}|{flip}".encode())
    for p in paths:
        st = Path(p).stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


class FeatureRunner:
    """The frozen network's forward: ONNX Runtime when it exports (several times faster on a CPU), else torch."""

    def __init__(self, model: SnakeNet, spec: ModelSpec, device):
        self.model, self.session = model.eval(), None
        if device.type == "cpu":
            try:
                from snake_model.predictor import OnnxNet

                self.session = OnnxNet(model, int(spec.image_size), threads=torch.get_num_threads())
            except Exception as e:  # noqa: BLE001 - the torch path gives the same numbers, only slower
                log.warning("ONNX Runtime unavailable for feature extraction (%s); using PyTorch", e)
        self.device = device

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.session is not None:
            return self.session(x)
        lg, f = self.model.to(self.device).logits_and_features(torch.from_numpy(x).to(self.device))
        return lg.float().cpu().numpy(), f.float().cpu().numpy()


def extract_features(
    paths: Sequence[str | Path],
    arch: str = DEFAULT_ARCH,
    image_size: int = 224,
    resize_method: str = "squish",
    batch_size: int = 32,
    flip: bool = False,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Average-pooled ImageNet features, shape (N, nf), and a mask of images that loaded.

    Rows of images the loader refuses are zeros with mask False. flip=True averages the features of the
    image and its mirror.
    """
    paths = [Path(p) for p in paths]
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"feats_{_cache_key(paths, arch, image_size, resize_method, flip)}.npz"
        if cache.is_file():
            try:
                with np.load(cache) as z:
                    feats, ok = z["feats"], z["ok"]
                if feats.shape[0] == ok.shape[0] == len(paths):
                    return feats, ok
                log.warning("feature cache %s does not match the %d photos; computing again", cache, len(paths))
            except (OSError, ValueError, KeyError, EOFError) as e:  # a torn or foreign file: recompute, never crash
                log.warning("feature cache %s is unreadable (%s); computing again", cache, e)
    net = build_network(arch, 1, pretrained=True, tta_flip=flip).eval()  # flip: the network averages both views
    spec = ModelSpec(labels=["x"], arch=arch, image_size=image_size, resize_method=resize_method)
    run = FeatureRunner(net, spec, torch.device("cpu"))
    feats = np.zeros((len(paths), net.body.num_features), dtype=np.float32)
    ok = np.zeros(len(paths), dtype=bool)
    bar = tqdm(total=len(paths), desc="features", unit="img", disable=not progress)
    for start in range(0, len(paths), batch_size):
        chunk, idx = [], []
        for i in range(start, min(start + batch_size, len(paths))):
            try:
                chunk.append(preprocess(load_image(paths[i]), spec))
                idx.append(i)
            except ImageLoadError as e:
                log.warning("skipping %s: %s", paths[i], e)
        if chunk:
            feats[idx] = run(np.stack(chunk))[1]
            ok[idx] = True
        bar.update(min(batch_size, len(paths) - start))
    bar.close()
    if cache is not None:
        tmp = cache.with_suffix(".tmp.npz")
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, feats=feats, ok=ok)
            tmp.replace(cache)
        except OSError as e:  # disk full, read-only: the features are computed, so the work is not lost
            log.warning("could not cache the features in %s (%s); they are used without a cache", cache.parent, e)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
    return feats, ok
