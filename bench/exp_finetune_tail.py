"""Does fine-tuning the last stages pay, started from the linear probe (LP-FT)? 5-fold CV.

python bench/exp_finetune_tail.py DATA_DIR [--k 5] [--epochs 3] [--lr 1e-4] [--ls 0]: caches the output of
Lite0's first K block stages (288 px centre crop) for 6 views of every image (plain, mirror and the default's 4
random resized crops) under /tmp/exp_ft, then in each of 5 folds:
1. fits the default's logistic head on the frozen features (plain + crops rows, C fixed by --C),
2. copies it into a linear layer on top of the remaining stages, conv_head and bn2,
3. fine-tunes those stages and the head with AdamW and a one-cycle schedule (batch norm frozen), one random view
   per training image per epoch,
and prints both held-out errors and NLLs (evaluated on the plain + mirror views averaged, as served).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

N_VIEWS = 6


def cache_activations(ds, body, k: int, cache: Path) -> np.ndarray:
    """(N, 6, C, H, W) float16 activations after body.blocks[:k], computed once."""
    import torch

    from snake_model.loader import load_image
    from snake_model.preprocess import preprocess
    from snake_model.spec import ModelSpec
    from train.recipe_fast import FAST, random_resized_crop

    if not cache.is_file():
        spec = ModelSpec(labels=list(ds.classes), image_size=288, resize_method="crop")
        rng = np.random.default_rng(42)
        x = np.empty((N_VIEWS, 3, 288, 288), np.float32)
        tmp = cache.with_suffix(".tmp.npy")
        out = None
        t = time.time()
        with torch.inference_mode():
            for i, p in enumerate(ds.paths):
                img = load_image(p)
                preprocess(img, spec, out=x[0])
                x[1] = x[0][:, :, ::-1]
                for v in range(N_VIEWS - 2):
                    preprocess(random_resized_crop(img, rng, FAST["aug_scale"]), spec, out=x[2 + v])
                h = body.blocks[:k](body.bn1(body.conv_stem(torch.from_numpy(x)))).numpy().astype(np.float16)
                if out is None:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    out = np.lib.format.open_memmap(tmp, "w+", np.float16, (len(ds.paths),) + h.shape)
                out[i] = h
        out.flush()
        del out
        tmp.rename(cache)
        print(f"cached activations in {time.time() - t:.0f} s", flush=True)
    return np.load(cache)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", type=Path)
    ap.add_argument("--k", type=int, default=5, help="block stages kept frozen and cached")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (stages and head)")
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--ls", type=float, default=0.0, help="label smoothing")
    ap.add_argument("--C", type=float, default=0.003, help="the probe's inverse regularisation")
    a = ap.parse_args()
    if not 0 <= a.k <= 7:
        ap.error(f"--k must be 0 to 7 (Lite0 has 7 block stages), not {a.k}")
    if a.epochs < 1:
        ap.error(f"--epochs must be at least 1, not {a.epochs}")
    if not a.lr > 0 or not a.C > 0 or not a.wd >= 0:
        ap.error("--lr and --C must be positive and --wd not negative")
    if not 0 <= a.ls < 1:
        ap.error(f"--ls must be from 0 to below 1, not {a.ls}")
    from bench.exp_cv import labelled_sets

    sets = list(labelled_sets([a.data]))
    if not sets:
        return 0
    _, ds, y = sets[0]

    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import StandardScaler

    from snake_model.network import build_network

    torch.set_num_threads(2)
    n_cls = len(ds.classes)
    body = build_network("tf_efficientnet_lite0", n_cls, pretrained=True).eval().body
    A = cache_activations(ds, body, a.k, Path("/tmp/exp_ft") / f"acts_{a.data.name}_k{a.k}.npy")

    def tail_module() -> nn.Sequential:
        b = copy.deepcopy(body)
        return nn.Sequential(*b.blocks[a.k :], b.conv_head, b.bn2)

    def pooled(tail: nn.Module, idx: np.ndarray, views) -> torch.Tensor:
        out = []
        for s in range(0, len(idx), 32):
            xb = A[idx[s : s + 32]][:, views].astype(np.float32)
            out.append(tail(torch.from_numpy(xb.reshape(-1, *A.shape[2:]))).mean((2, 3)))
        return torch.cat(out).reshape(len(idx), len(views), -1)

    with torch.inference_mode():
        P = pooled(tail_module().eval(), np.arange(len(y)), list(range(N_VIEWS))).numpy()
    res = []
    for fi, (tr, va) in enumerate(StratifiedKFold(5, shuffle=True, random_state=0).split(y, y)):
        xt = np.concatenate([P[tr, :2].mean(1), P[tr, 2:].reshape(-1, P.shape[2])])
        yt = np.concatenate([y[tr], np.repeat(y[tr], N_VIEWS - 2)])
        sc = StandardScaler().fit(xt)
        lr = LogisticRegression(C=a.C, max_iter=3000).fit(sc.transform(xt), yt)
        pv = lr.predict_proba(sc.transform(P[va, :2].mean(1)))
        lp = (float((pv.argmax(1) != y[va]).mean()), float(-np.log(pv[np.arange(len(va)), y[va]]).mean()))
        w = lr.coef_ / sc.scale_
        tail, head = tail_module().eval(), nn.Linear(w.shape[1], n_cls)  # eval: batch norm statistics stay frozen
        head.weight.data = torch.tensor(w, dtype=torch.float32)
        head.bias.data = torch.tensor(lr.intercept_ - w @ sc.mean_, dtype=torch.float32)
        opt = torch.optim.AdamW([*tail.parameters(), *head.parameters()], lr=a.lr, weight_decay=a.wd)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=a.lr, total_steps=a.epochs * -(-len(tr) // 32), pct_start=0.25
        )
        g = np.random.default_rng(fi)
        t = time.time()
        for _ in range(a.epochs):
            perm, views = g.permutation(tr), g.integers(0, N_VIEWS, len(tr))
            for s in range(0, len(perm), 32):
                xb = torch.from_numpy(A[perm[s : s + 32], views[s : s + 32]].astype(np.float32))
                loss = F.cross_entropy(
                    head(tail(xb).mean((2, 3))), torch.from_numpy(y[perm[s : s + 32]]), label_smoothing=a.ls
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        secs = time.time() - t
        with torch.inference_mode():
            pr = F.softmax(head(pooled(tail, va, [0, 1]).mean(1)), 1).numpy()
        ft = (float((pr.argmax(1) != y[va]).mean()), float(-np.log(pr[np.arange(len(va)), y[va]]).mean()))
        res.append(lp + ft)
        print(
            f"fold {fi}: probe {lp[0]:.3f} / {lp[1]:.3f}   fine-tuned {ft[0]:.3f} / {ft[1]:.3f}   ({secs:.0f} s)",
            flush=True,
        )
    r = np.mean(res, 0)
    print(
        f"{a.data.name} k={a.k} epochs={a.epochs} lr={a.lr} ls={a.ls}: error / NLL  probe {r[0]:.3f} / {r[1]:.3f}"
        f"   fine-tuned {r[2]:.3f} / {r[3]:.3f}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
