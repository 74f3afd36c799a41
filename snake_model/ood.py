"""Out-of-distribution score and the abstain decision ("not one of my classes").

The default score is deep k-nearest-neighbours (Sun et al., 2022): cosine distance from an image's pooled
backbone features to its k-th nearest training image. Photos unlike any training photo (not a snake, or a
drawing, or a blank wall) sit far from all of them, however confident the softmax is. Max-softmax remains the
fallback for artifacts without a feature bank.
"""

from __future__ import annotations

import math

import numpy as np

MAX_BANK = 4096
OOD_FILE = "ood.safetensors"


def normalise(feats: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    f = np.asarray(feats, dtype=np.float32)
    n = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.maximum(n, 1e-12)


def make_bank(train_feats: np.ndarray, seed: int = 0) -> np.ndarray:
    """The feature bank stored in the artifact: normalised training features, at most MAX_BANK rows."""
    f = normalise(train_feats)
    if len(f) > MAX_BANK:
        f = f[np.random.default_rng(seed).choice(len(f), MAX_BANK, replace=False)]
    return f.astype(np.float16)


def knn_scores(feats: np.ndarray, bank: np.ndarray, k: int = 5) -> np.ndarray:
    """1 - cosine similarity to the k-th nearest bank row: higher means more unusual."""
    # einsum without optimize runs in numpy's own loop, not BLAS: OpenBLAS's worker threads keep spinning after a
    # matmul and slowed the next ONNX Runtime forward by ~5 ms (bench/serve_latency.py, app path). The product
    # is small (one image x at most MAX_BANK rows), so the plain loop costs well under a millisecond.
    sims = np.einsum("nd,md->nm", normalise(feats), np.asarray(bank, dtype=np.float32), optimize=False)
    k = max(1, min(k, bank.shape[0]))
    kth = np.partition(-sims, k - 1, axis=1)[:, k - 1]
    return 1.0 + kth  # = 1 - (k-th largest similarity)


def softmax_scores(probs: np.ndarray) -> np.ndarray:
    """1 - max probability per row."""
    return 1.0 - np.asarray(probs).max(axis=1)


def ood_score(probs: np.ndarray) -> float:
    """Max-softmax score of one probability row."""
    return float(1.0 - np.max(probs))


def abstains(score: float, threshold: float | None) -> bool:
    """Abstain when the score is above the stored threshold; no threshold means never abstain.

    A score that is not a finite number (NaN from NaN weights or features, or an infinity) always abstains, with or
    without a threshold: NaN > threshold is False, so it used to pass as "in distribution". A NaN threshold abstains
    too, for the same reason."""
    if not math.isfinite(score):
        return True
    if threshold is None:
        return False
    return math.isnan(threshold) or score > threshold


def choose_threshold(in_dist_scores: np.ndarray, max_false_abstain: float = 0.05) -> float:
    """The smallest threshold that abstains on at most max_false_abstain of in-distribution images."""
    s = np.sort(np.asarray(in_dist_scores, dtype=np.float64))
    if len(s) == 0:
        return 1.0
    k = int(np.ceil((1.0 - max_false_abstain) * len(s))) - 1
    return float(s[min(max(k, 0), len(s) - 1)])
