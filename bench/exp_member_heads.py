"""How should two backbones' features be combined, and how many training crops does the pair need?

python bench/exp_member_heads.py DATA_DIR [DATA_DIR ...]: on the int8 Lite0 and Lite2 features of
bench/exp_int8_ensemble.py (320 px, the photo and its zoomed mirror view averaged, 4 random resized crops per training
photo; cached under /tmp/exp_int8_ensemble, computed there when missing), 5-fold CV with fold seeds 0-2 of:

- "logit-avg, joint C": what train.fit does. One standardised logistic head per backbone (the Cs (0.001, 0.003,
  0.01, 0.03) fitted as one warm-started path per fold, as train.recipe_fast does), the two heads' logits averaged,
  the pair of Cs chosen by the averaged heads' out-of-fold NLL; with 4, 3 and 2 training crops.
- "logit-avg, own C": the same, each head's C chosen by its own out-of-fold NLL; 4 and 3 crops.
- "prob-avg": the same two heads at a common C = 0.003, probabilities averaged (bench/RESULTS.md 1m's row).
- "concat": one head over both backbones' 2560 features, C from (0.001, 0.003) by out-of-fold NLL.

Prints error / NLL per fold seed and their means, and the default's out-of-fold ECE before and after temperature
scaling (the temperature of each half of the photos fitted on the other half).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import data_args, labelled_sets  # noqa: E402

CS = (0.001, 0.003, 0.01, 0.03)


def oof_path(f: np.ndarray, c: np.ndarray, y: np.ndarray, Cs, seed: int) -> dict[float, np.ndarray]:
    """{C: out-of-fold probabilities (N, K)} of a standardised logistic head trained on each fold's photos and their
    crops c (N, V, d), the Cs fitted as one warm-started path per fold."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    k = int(y.max()) + 1
    out = {C: np.zeros((len(y), k)) for C in Cs}
    for tr, va in StratifiedKFold(5, shuffle=True, random_state=seed).split(f, y):
        x = np.concatenate([f[tr], c[tr].reshape(-1, c.shape[2])])
        yy = np.concatenate([y[tr], np.repeat(y[tr], c.shape[1])])
        mu, sd = x.mean(0), x.std(0) + 1e-6
        m = LogisticRegression(max_iter=3000, warm_start=True)
        for C in sorted(Cs):
            m.set_params(C=C).fit((x - mu) / sd, yy)
            out[C][va] = m.predict_proba((f[va] - mu) / sd)
    return out


def nll(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, 1))))


def best(path: dict[float, np.ndarray], y: np.ndarray) -> np.ndarray:
    """The out-of-fold probabilities at the C with the lowest NLL."""
    return path[min(path, key=lambda C: nll(path[C], y))]


def logit_mean(*probs: np.ndarray) -> np.ndarray:
    z = np.mean([np.log(np.clip(p, 1e-12, 1)) for p in probs], axis=0)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def main() -> int:
    sets = list(labelled_sets(data_args(sys.argv[1:], __doc__)))
    from threadpoolctl import threadpool_limits

    from bench.exp_int8_ensemble import feats

    threadpool_limits(limits=1, user_api="blas")  # as train.fit fits its heads: 2-3x faster on these small matrices

    for data, ds, y in sets:
        Z = {a: feats(ds, data.name, a) for a in ("lite0", "lite2")}
        rows: dict[str, list[tuple[float, float]]] = {}
        calib: list[tuple[float, float, float]] = []
        for seed in (0, 1, 2):
            for views in (4, 3, 2):
                paths = {a: oof_path(Z[a]["f"], Z[a]["c"][:, :views], y, CS, seed) for a in Z}
                if views in (4, 3):
                    p = logit_mean(best(paths["lite0"], y), best(paths["lite2"], y))
                    rows.setdefault(f"logit-avg, own C, {views} crops", []).append(
                        (float((p.argmax(1) != y).mean()), nll(p, y))
                    )
                pairs = {(a, b): logit_mean(paths["lite0"][a], paths["lite2"][b]) for a in CS for b in CS}
                p = pairs[min(pairs, key=lambda ab: nll(pairs[ab], y))]
                rows.setdefault(f"logit-avg, joint C, {views} crops", []).append(
                    (float((p.argmax(1) != y).mean()), nll(p, y))
                )
                if views == 4:
                    calib.append(calibration(p, y, seed))
                if views == 4:
                    p = (paths["lite0"][0.003] + paths["lite2"][0.003]) / 2
                    rows.setdefault("prob-avg C=0.003, 4 crops", []).append(
                        (float((p.argmax(1) != y).mean()), nll(p, y))
                    )
            f = np.concatenate([Z["lite0"]["f"], Z["lite2"]["f"]], 1)
            c = np.concatenate([Z["lite0"]["c"], Z["lite2"]["c"]], 2)
            p = best(oof_path(f, c, y, (0.001, 0.003), seed), y)
            rows.setdefault("concat, 4 crops", []).append((float((p.argmax(1) != y).mean()), nll(p, y)))
            print(f"{data.name}: fold seed {seed} done", flush=True)
        for name, v in rows.items():
            print(
                f"{data.name:5s} {name:28s} "
                + "  ".join(f"{e:.1%} / {n:.3f}" for e, n in v)
                + f"   mean {np.mean([e for e, _ in v]):.1%} / {np.mean([n for _, n in v]):.3f}",
                flush=True,
            )
        before, after, floor = np.mean(calib, axis=0)
        print(
            f"{data.name:5s} default (joint C, 4 crops), out-of-fold ECE: {before:.1%} before temperature, "
            f"{after:.1%} after (T fitted on the other half of the photos), noise floor {floor:.1%}; means over "
            "the fold seeds",
            flush=True,
        )
    return 0


def calibration(p: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, float, float]:
    """ECE of out-of-fold probabilities p before and after temperature scaling, the temperature of each half of
    the photos fitted on the other half (so no photo is scored by a temperature fitted on it); and the ECE noise
    floor of the calibrated probabilities."""
    from train.metrics import ece, ece_noise_floor, fit_temperature

    logits = np.log(np.clip(p, 1e-12, 1))
    half = np.random.default_rng(seed).permutation(len(y)) < len(y) // 2
    cal = np.zeros_like(p)
    for part in (half, ~half):
        t = fit_temperature(logits[~part], y[~part])
        z = logits[part] / t
        z = np.exp(z - z.max(1, keepdims=True))
        cal[part] = z / z.sum(1, keepdims=True)
    return ece(p, y), ece(cal, y), ece_noise_floor(cal)


if __name__ == "__main__":
    raise SystemExit(main())
