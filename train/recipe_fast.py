"""The project's default recipe: a calibrated linear head on frozen ImageNet features.

On a few hundred photos per class, fine-tuning the whole network on a CPU is slow and, on this project's
data, loses to a well-regularised linear head on frozen features (bench/RESULTS.md). So the fast recipe
extracts pooled features once per image (optionally averaged with its mirror image, --tta, which the
network then keeps at serving time), at a larger input size than ImageNet's 224 px
(snakes are often small in the frame), fits a multinomial logistic regression with its strength chosen by
cross-validation, and folds the scaler and the regression into the network's linear head. The artifact is the
ordinary full network: serving does not know how it was trained.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from tqdm.auto import tqdm

from snake_model.loader import load_image
from snake_model.network import FAST_ARCH, LinearHead, SnakeNet, build_network
from snake_model.preprocess import preprocess, preprocess_batch
from snake_model.spec import ModelSpec
from snake_model.text import error_line

from .data import Dataset, DatasetError
from .features import FeatureRunner

log = logging.getLogger(__name__)

# Defaults chosen by the experiments in bench/RESULTS.md.
FAST = {
    "arch": FAST_ARCH,  # Lite0 + Lite2 side by side (bench/RESULTS.md 1n)
    "int8": True,  # on a CPU: the bodies run as an int8 ONNX graph in training and serving (snake_model.quant)
    "calibration_photos": 64,
    "size": 320,  # bench/RESULTS.md section 1l: 288 -> 320 px gains 1.4 points on na4, 0.3-0.6 elsewhere
    "resize": "crop",
    "tta_flip": True,  # the same default as train.fit --tta
    "tta_zoom": 0.8,  # the second view: the mirror image of the central 80 % (bench/RESULTS.md section 1i)
    "Cs": (0.001, 0.003, 0.01, 0.03, 0.1),
    "folds": 5,
    "max_iter": 3000,
    "aug_views": 4,
    "aug_scale": (0.35, 1.0),
}


def random_resized_crop(img, rng: np.random.Generator, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3)):
    """torchvision's RandomResizedCrop box sampling (the crop only; resizing is the spec's), randomly mirrored."""
    from PIL import ImageOps

    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(*scale)
        ar = float(np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]))))
        cw, ch = int(round(np.sqrt(area * ar))), int(round(np.sqrt(area / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = img.crop((x0, y0, x0 + cw, y0 + ch))
            break
    return ImageOps.mirror(img) if rng.random() < 0.5 else img


def augmented_features(
    model: SnakeNet, paths, spec: ModelSpec, views: int, seed: int, quiet: bool = True, device=None
) -> np.ndarray:
    """Pooled features of `views` random resized crops of every image, shape (len(paths), views, nf).

    Each crop goes through the body once (no mirror averaging: the crops are randomly mirrored instead).
    """
    plain = SnakeNet(model.body, model.head, tta_flip=False).eval()
    runner = FeatureRunner(plain, spec, device or torch.device("cpu"))
    rng = np.random.default_rng(seed)
    out = np.zeros((len(paths), views, model.body.num_features), np.float32)
    x = np.empty((views, 3, spec.image_size, spec.image_size), np.float32)
    for i, p in enumerate(tqdm(paths, desc="features (augmented views)", unit="img", disable=quiet)):
        img = load_image(p)
        for v in range(views):
            preprocess(random_resized_crop(img, rng, FAST["aug_scale"]), spec, out=x[v])
        out[i] = runner(x)[1]
    return out


def full_pass(
    model: SnakeNet,
    paths,
    spec: ModelSpec,
    bs: int = 32,
    desc: str = "",
    quiet: bool = True,
    device=None,
    runner: FeatureRunner | None = None,
):
    """(logits, pooled features) through the whole network, as the predictor computes them."""
    runner = runner or FeatureRunner(model, spec, device or torch.device("cpu"))
    logits, feats = [], []
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=quiet)
    for s in range(0, len(paths), bs):
        lg, f = runner(preprocess_batch(paths[s : s + bs], spec, load_image))
        logits.append(lg)
        feats.append(f)
        bar.update(len(lg))
    bar.close()
    if not logits:
        return np.zeros((0, len(spec.labels)), np.float32), np.zeros((0, 1), np.float32)
    return np.concatenate(logits), np.concatenate(feats)


def head_cv(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int, seed: int, scored: np.ndarray | None = None
) -> tuple[int, dict[float, np.ndarray]]:
    """Grouped k-fold cross-validation of the standardised logistic head over FAST["Cs"]: (folds used, {C: out-of-fold
    probabilities of the scored rows, in row order}); (0, {}) when there are too few images to cross-validate.

    groups keep the rows of one image (its augmented views) in one fold; only rows where `scored` is True (the plain
    views, what serving sees) are predicted out of fold.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedGroupKFold

    scored = np.ones(len(y), bool) if scored is None else np.asarray(scored, bool)
    counts = np.bincount(y[scored], minlength=n_classes)
    folds = int(min(FAST["folds"], counts.min() // 2 if counts.min() >= 4 else 0))
    if folds < 2 or len(FAST["Cs"]) < 2:
        return 0, {}  # no cross-validation: the log says so
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    Cs = sorted(FAST["Cs"])
    oof = {C: np.zeros((len(y), n_classes)) for C in Cs}
    for tr, va in StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(z, y, groups):
        # One regression per fold, refitted from the previous C's solution (weakest regularisation last): the
        # same optima, about 1.6x faster than fitting every C from zero (bench/RESULTS.md 1n).
        m = LogisticRegression(max_iter=FAST["max_iter"], warm_start=True)
        va = va[scored[va]]
        for C in Cs:
            m.set_params(C=C).fit(z[tr], y[tr])
            oof[C][va] = _full_proba(m, z[va], n_classes)
    return folds, {C: p[scored] for C, p in oof.items()}


def final_head(x: np.ndarray, y: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
    """The standardised logistic head at C on all rows, as (W, b) acting on the raw features."""
    from sklearn.linear_model import LogisticRegression

    mu, sd = x.mean(0), x.std(0) + 1e-6
    m = LogisticRegression(C=C, max_iter=FAST["max_iter"]).fit((x - mu) / sd, y)
    coef, icpt = m.coef_, m.intercept_
    if coef.shape[0] == 1:  # sklearn's binary form: one row for class 1
        coef, icpt = np.vstack([-coef / 2, coef / 2]), np.array([-icpt[0] / 2, icpt[0] / 2])
    w = coef / sd
    b = icpt - (coef * (mu / sd)).sum(1)
    return w.astype(np.float32), b.astype(np.float32)


def _log_loss(p: np.ndarray, y: np.ndarray, n_classes: int) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(y, p, labels=list(range(n_classes))))


def fit_linear_head(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, n_classes: int, seed: int, scored: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Standardise, pick C by grouped k-fold log-loss (head_cv), fit; return (W, b) acting on raw features, and a log.

    The log also holds the out-of-fold probabilities of the scored rows under the chosen C ("oof_probs", in row
    order).
    """
    scored = np.ones(len(y), bool) if scored is None else np.asarray(scored, bool)
    folds, oof = head_cv(x, y, groups, n_classes, seed, scored)
    scores = {C: _log_loss(p, y[scored], n_classes) for C, p in oof.items()}
    best = min(scores, key=scores.get) if scores else FAST["Cs"][len(FAST["Cs"]) // 2]
    w, b = final_head(x, y, best)
    log_ = {"C": best, "cv_log_loss": scores, "folds": folds}
    if best in oof:
        log_["oof_probs"] = oof[best]
    return w, b, log_


def logit_mean(probs: list[np.ndarray]) -> np.ndarray:
    """Probabilities whose logits are the mean of the members' log-probabilities (what averaging linear heads'
    logits gives)."""
    z = np.mean([np.log(np.clip(p, 1e-12, 1.0)) for p in probs], axis=0)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def fit_member_heads(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    n_classes: int,
    seed: int,
    scored: np.ndarray | None,
    widths: list[int],
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One logistic head per backbone's block of features (widths: the blocks' sizes, in order), combined into one
    linear head over all of them whose logits are the mean of the members' logits.

    Each member is cross-validated over FAST["Cs"] (head_cv, same folds), and the members' Cs are chosen together:
    the combination whose averaged out-of-fold predictions have the lowest log-loss, i.e. the hyper-parameters of the
    model that is served (bench/RESULTS.md 1n). With one block this is fit_linear_head. The log's "oof_probs" are
    the combined out-of-fold probabilities at the chosen Cs.
    """
    import itertools
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    scored = np.ones(len(y), bool) if scored is None else np.asarray(scored, bool)
    starts = np.cumsum([0, *widths])
    blocks = [x[:, a:e] for a, e in zip(starts[:-1], starts[1:], strict=True)]
    # One BLAS thread per fit: on these small matrices OpenBLAS's threads cost more than they give (a member's CV in
    # 5.5 s instead of 14.6 s on na4), and the members' fits then share the cores as two threads (bench/RESULTS.md 1n).
    with threadpool_limits(limits=1, user_api="blas"):
        if len(widths) == 1:
            return fit_linear_head(x, y, groups, n_classes, seed, scored)
        with ThreadPoolExecutor(max_workers=2) as pool:
            cvs = list(pool.map(lambda xb: head_cv(xb, y, groups, n_classes, seed, scored), blocks))
            folds = cvs[0][0]
            combined: dict[tuple[float, ...], np.ndarray] = {}  # the members' Cs -> combined out-of-fold probabilities
            for combo in itertools.product(*(sorted(oof) for _, oof in cvs)):
                combined[combo] = logit_mean([oof[C] for (_, oof), C in zip(cvs, combo, strict=True)])
            losses = {combo: _log_loss(p, y[scored], n_classes) for combo, p in combined.items()}
            best = min(losses, key=losses.get) if losses else None
            chosen = list(best) if best else [FAST["Cs"][len(FAST["Cs"]) // 2]] * len(widths)
            heads = list(pool.map(lambda bc: final_head(bc[0], y, bc[1]), zip(blocks, chosen, strict=True)))
    m = len(widths)
    w = np.concatenate([h[0] for h in heads], axis=1) / m
    b = np.mean([h[1] for h in heads], axis=0)
    log_: dict = {
        "C": chosen,
        "combine": "mean of the members' logits; Cs chosen together by the combined out-of-fold log-loss",
        "folds": folds,
        "members": [
            {"C": C, "cv_log_loss": {c: _log_loss(p, y[scored], n_classes) for c, p in oof.items()}}
            for C, (_, oof) in zip(chosen, cvs, strict=True)
        ],
        "cv_log_loss": {"/".join(map(str, combo)): loss for combo, loss in losses.items()},
    }
    if best:
        log_["oof_probs"] = combined[best]
    return w.astype(np.float32), b.astype(np.float32), log_


def member_widths(model: SnakeNet) -> list[int]:
    """Feature widths of the network's bodies, in the order their features are joined."""
    bodies = getattr(model.body, "bodies", None)
    return [int(b.num_features) for b in bodies] if bodies is not None else [int(model.body.num_features)]


def _full_proba(m, z: np.ndarray, n_classes: int) -> np.ndarray:
    """predict_proba with a column for every class, also those missing from a fold's training rows."""
    out = np.zeros((len(z), n_classes))
    out[:, m.classes_] = m.predict_proba(z)
    return out / out.sum(1, keepdims=True)  # float32 features give float32 rows, off 1 by more than float64 allows


class PlainViews:
    """Pooled body features of single plain views (no TTA inside): the int8 graph when there is one, else the float32
    body (ONNX Runtime on a CPU, torch on a GPU).

    With the int8 graph and two or more CPU threads there are two ONNX Runtime sessions of one thread each, run side
    by side on different photos: 10.8 ms a 320-px view of Lite0 + Lite2 against 14-15 ms for one session with two
    threads (bench/RESULTS.md 1n).
    """

    def __init__(self, model: SnakeNet, spec: ModelSpec, device, graph: bytes | None = None):
        if graph is not None:
            from snake_model.quant import Int8Body

            threads = torch.get_num_threads()
            workers = 2 if threads >= 2 else 1
            self.runs = [Int8Body(graph, threads=max(1, threads // workers)).__call__ for _ in range(workers)]
        else:
            runner = FeatureRunner(SnakeNet(model.body, model.head, tta_flip=False), spec, device)
            self.runs = [lambda x: runner(x)[1]]

    @property
    def workers(self) -> int:
        return len(self.runs)

    def __call__(self, x: np.ndarray, worker: int = 0) -> np.ndarray:
        return self.runs[worker](x)


def photo_features(
    model: SnakeNet,
    paths,
    spec: ModelSpec,
    plain: PlainViews,
    views: int = 0,
    seed: int = 0,
    desc: str = "features",
    quiet: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Served features (the photo's views averaged as the network averages them), shape (N, nf), and the pooled
    features of `views` random resized crops of each photo (N, views, nf; None without views).

    Every photo is read and decoded once. Photo i's crops (randomly mirrored, no second view) come from a generator
    seeded with (seed, i), so they do not depend on how the photos are shared out among plain's workers.
    """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    tta = bool(model.tta_flip)
    served = np.zeros((len(paths), model.body.num_features), np.float32)
    crops = np.zeros((len(paths), views, model.body.num_features), np.float32) if views else None
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=quiet)
    lock, stop = threading.Lock(), threading.Event()

    def work(k: int) -> None:
        x = np.empty((1 + tta + views, 3, spec.image_size, spec.image_size), np.float32)
        for i in range(k, len(paths), plain.workers):
            if stop.is_set():  # the run failed or was interrupted elsewhere: do no more
                return
            rng = np.random.default_rng([seed, i])
            img = load_image(paths[i])
            preprocess(img, spec, out=x[0])
            if tta:
                with torch.inference_mode():
                    x[1] = model.second_view(torch.from_numpy(x[:1])).numpy()[0]
            for v in range(views):
                preprocess(random_resized_crop(img, rng, FAST["aug_scale"]), spec, out=x[1 + tta + v])
            f = plain(x, k)
            served[i] = f[: 1 + tta].mean(0)
            if crops is not None:
                crops[i] = f[1 + tta :]
            with lock:
                bar.update(1)

    pool = ThreadPoolExecutor(max_workers=plain.workers)
    try:
        for future in [pool.submit(work, k) for k in range(plain.workers)]:
            future.result()  # the first failure is raised here
    finally:
        stop.set()  # Ctrl-C, SIGTERM or a worker's error: the other workers stop at their next photo
        pool.shutdown(wait=True)
        bar.close()
    return served, crops


def calibration_photos(paths, spec: ModelSpec, seed: int, n: int | None = None) -> np.ndarray:
    """n photos (default FAST["calibration_photos"]) drawn from paths, preprocessed: the int8 ranges come from them."""
    n = min(n or FAST["calibration_photos"], len(paths))
    pick = np.random.default_rng(seed).choice(len(paths), n, replace=False)
    return np.stack([preprocess(load_image(paths[i]), spec) for i in sorted(pick)])


def train_fast(ds: Dataset, train_idx, valid_idx, args: argparse.Namespace, device):
    """Run the fast recipe; return (model on CPU, spec, validation logits, feature extras)."""
    torch.manual_seed(args.seed)
    head = args.head or "linear"
    if head != "linear":
        raise DatasetError("the fast recipe trains a linear head; use --recipe original for --head fastai")
    size = args.size or FAST["size"]
    arch = args.arch or FAST["arch"]
    tta = FAST["tta_flip"] if args.tta is None else args.tta
    zoom = FAST["tta_zoom"] if getattr(args, "tta_zoom", None) is None else args.tta_zoom
    zoom = zoom if tta else 1.0
    int8 = getattr(args, "int8", None)
    int8 = (FAST["int8"] and device.type == "cpu") if int8 is None else int8
    model = build_network(
        arch, len(ds.classes), head="linear", pretrained=not args.no_pretrained, tta_flip=tta, tta_zoom=zoom
    )
    model.eval()
    cfg = getattr(model.body, "pretrained_cfg", {}) or {}
    spec = ModelSpec(
        labels=list(ds.classes),
        arch=arch,
        head="linear",
        image_size=size,
        resize_method=args.resize or FAST["resize"],
        tta_flip=tta,
        tta_zoom=zoom,
        mean=tuple(cfg.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(cfg.get("std", (0.5, 0.5, 0.5))),
    )
    tr_paths = [ds.paths[i] for i in train_idx]
    ytr = np.array([ds.labels[i] for i in train_idx])
    graph = None
    if int8:
        from snake_model.quant import quantize_body

        if not args.quiet:
            print(f"quantizing the body to int8 (ranges from {min(FAST['calibration_photos'], len(tr_paths))} photos)")
        photos = calibration_photos(tr_paths, spec, args.seed)
        try:
            graph = quantize_body(model.body, size, photos)
            plain = PlainViews(model, spec, device, graph)
        except Exception as e:  # noqa: BLE001 - ONNX Runtime cannot quantize or run this arch: say so, keep --out
            raise DatasetError(
                f"ONNX Runtime could not quantize --arch {arch} to int8 ({error_line(e)}); train it in float32 with "
                "--no-int8"
            ) from e
    else:
        plain = PlainViews(model, spec, device, graph)
    views = FAST["aug_views"] if args.aug else 0
    # Augmented training rows: random resized crops of each training image (bench/RESULTS.md section 1c).
    ftr, fa = photo_features(model, tr_paths, spec, plain, views, args.seed, "features (train)", args.quiet)
    x, yy, groups = ftr, ytr, np.arange(len(ytr))
    if fa is not None:
        x = np.concatenate([ftr, fa.reshape(-1, fa.shape[2])])
        yy = np.concatenate([ytr, np.repeat(ytr, views)])
        groups = np.concatenate([groups, np.repeat(groups, views)])
    scored = np.arange(len(yy)) < len(ytr)
    w, b, fit_log = fit_member_heads(x, yy, groups, len(ds.classes), args.seed, scored, member_widths(model))
    oof = fit_log.pop("oof_probs", None)
    assert isinstance(model.head, LinearHead)
    with torch.no_grad():
        model.head.fc.weight.copy_(torch.from_numpy(w))
        model.head.fc.bias.copy_(torch.from_numpy(b))
    va_paths = [ds.paths[i] for i in valid_idx]
    # The head is linear on pooled features (dropout is off in eval), so the fitted head's logits are exact.
    fva, _ = photo_features(model, va_paths, spec, plain, desc="features (valid)", quiet=args.quiet)
    logits = fva @ w.T + b
    spec.training = {
        **{k: v for k, v in FAST.items() if k not in ("Cs", "aug_scale", "resize", "arch", "int8")},
        "Cs": list(FAST["Cs"]),
        "size": size,
        "tta_flip": tta,
        "tta_zoom": zoom,
        "int8": bool(int8),
        "folds": fit_log["folds"],  # the folds actually used: 0 when there were too few images to cross-validate
        "head_fit": fit_log,
        "aug_views": views,
        "aug_scale": list(FAST["aug_scale"]),
        "pretrained": not args.no_pretrained,
    }
    if not int8:
        spec.training.pop("calibration_photos")
    c = "/".join(map(str, fit_log["C"])) if isinstance(fit_log["C"], list) else fit_log["C"]
    heads = f"linear heads ({len(fit_log['members'])}, logits averaged)" if "members" in fit_log else "linear head"
    if fit_log["folds"]:
        print(f"{heads}: C={c} (chosen by {fit_log['folds']}-fold log-loss)")
    else:
        print(f"{heads}: default C={c} (too few images to cross-validate)")
    extras = {"train_feats": ftr, "valid_feats": fva, "int8_graph": graph}
    if oof is not None:
        # Out-of-fold predictions on the training images, as logits (log-probabilities: softmax is unchanged), so
        # the temperature can be fitted on them too (bench/RESULTS.md section 1e).
        extras["oof_logits"] = np.log(np.clip(oof, 1e-12, 1.0))
        extras["oof_y"] = ytr
    return model, spec, logits, extras
