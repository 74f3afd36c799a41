"""Classification metrics in plain numpy: confusion, per-class P/R/F1, ECE, NLL, temperature fitting."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int) -> np.ndarray:
    """Counts, rows = actual class, columns = predicted class."""
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)), 1)
    return cm


def per_class(cm: np.ndarray, labels: list[str], undefined: float | None = 0.0) -> dict[str, dict]:
    """Precision, recall, F1 and support per class from a confusion matrix.

    A class with no images (support 0) has no recall and no F1, nor a precision unless something was predicted
    as it (then 0): those are `undefined` (0 by default; train.fit passes None, JSON null). A class with images
    that is never predicted has precision 0 (the usual convention), recall 0 and F1 0.
    """
    out = {}
    for i, lab in enumerate(labels):
        tp = float(cm[i, i])
        col, row = float(cm[:, i].sum()), float(cm[i, :].sum())
        if not row:
            p, r, f1 = (tp / col if col else undefined), undefined, undefined
        else:
            p, r = (tp / col if col else 0.0), tp / row
            f1 = 2 * p * r / (p + r) if p + r else 0.0
        out[lab] = {"precision": p, "recall": r, "f1": f1, "support": int(row)}
    return out


def macro_f1(per: dict[str, dict]) -> float | None:
    """Mean F1 over the classes where it is defined (classes without validation images are left out)."""
    f1s = [v.get("f1") for v in per.values() if isinstance(v, dict)]
    f1s = [f for f in f1s if isinstance(f, int | float) and not isinstance(f, bool)]
    return float(np.mean(f1s)) if f1s else None


def ece(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of the top-1 confidence, equal-width bins."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(total)


def ece_noise_floor(probs: np.ndarray, n_bins: int = 15, draws: int = 200, seed: int = 0) -> float:
    """The ECE that a perfectly calibrated model with these confidences would show on this many images.

    Labels are drawn from the model's own probabilities (so the probabilities are exactly right) and the ECE of
    each draw is averaged. With a couple of hundred images this is several points: a measured ECE near it is
    as good as that sample can show.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) == 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    total = 0.0
    for _ in range(draws):
        u = rng.random((len(probs), 1))
        y = np.minimum((u > cum).sum(axis=1), probs.shape[1] - 1)
        total += ece(probs, y, n_bins)
    return total / draws


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 10) -> list[dict]:
    """Per-bin mean confidence, accuracy and count, for the reliability diagram."""
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == np.asarray(y_true)).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        bins.append(
            {
                "lo": float(lo),
                "hi": float(hi),
                "count": int(m.sum()),
                "confidence": float(conf[m].mean()) if m.any() else None,
                "accuracy": float(correct[m].mean()) if m.any() else None,
            }
        )
    return bins


def log_softmax(logits: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / t
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def nll(logits: np.ndarray, y_true: np.ndarray, t: float = 1.0) -> float:
    """Mean negative log-likelihood of the true class at temperature t."""
    lp = log_softmax(logits, t)
    return float(-lp[np.arange(len(lp)), np.asarray(y_true, dtype=int)].mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature minimising validation NLL (golden-section search on log T in [-3, 3])."""
    if len(logits) == 0:
        return 1.0
    lo, hi = -3.0, 3.0
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(logits, y_true, np.exp(a)), nll(logits, y_true, np.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(logits, y_true, np.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(logits, y_true, np.exp(b))
    return float(np.exp((lo + hi) / 2))


def auroc(neg_scores: np.ndarray, pos_scores: np.ndarray) -> float:
    """Probability that a positive (e.g. out-of-distribution) scores higher than a negative; ties count half."""
    neg, pos = np.asarray(neg_scores, float), np.asarray(pos_scores, float)
    if len(neg) == 0 or len(pos) == 0:
        return float("nan")
    allv = np.concatenate([neg, pos])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    # average ranks for ties
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inv, ranks)
    ranks = (sums / counts)[inv]
    r_pos = ranks[len(neg) :].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def summarize(probs: np.ndarray, y_true: np.ndarray, labels: list[str], undefined: float | None = 0.0) -> dict:
    """The metrics.json core: error, per-class metrics (`undefined` where a value is, see per_class), confusion
    counts, ECE."""
    y_true = np.asarray(y_true, dtype=int)
    pred = probs.argmax(axis=1)
    cm = confusion(y_true, pred, len(labels))
    return {
        "n": int(len(y_true)),
        "error": float((pred != y_true).mean()) if len(y_true) else float("nan"),
        "labels": list(labels),
        "per_class": per_class(cm, labels, undefined),
        "confusion": cm.tolist(),
        "ece": ece(probs, y_true) if len(y_true) else float("nan"),
        "ece_noise_floor": ece_noise_floor(probs),
    }
