"""Out-of-distribution score and the abstain decision ("not one of my classes")."""

from __future__ import annotations

import numpy as np


def ood_score(probs: np.ndarray) -> float:
    """Higher means more unusual: 1 - max calibrated softmax probability."""
    return float(1.0 - np.max(probs))


def ood_scores(probs: np.ndarray) -> np.ndarray:
    """Vectorised ood_score over rows."""
    return 1.0 - probs.max(axis=1)


def abstains(score: float, threshold: float | None) -> bool:
    """Abstain when the score is above the stored threshold; no threshold means never abstain."""
    return threshold is not None and score > threshold


def choose_threshold(in_dist_scores: np.ndarray, max_false_abstain: float = 0.05) -> float:
    """The smallest threshold that abstains on at most max_false_abstain of in-distribution images."""
    s = np.sort(np.asarray(in_dist_scores, dtype=np.float64))
    if len(s) == 0:
        return 1.0
    k = int(np.ceil((1.0 - max_false_abstain) * len(s))) - 1
    return float(s[min(max(k, 0), len(s) - 1)])
