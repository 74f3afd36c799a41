"""Experiments behind the fast recipe's defaults (results in bench/RESULTS.md).

python bench/exp_fast.py DATA_DIR [--size 224] : one stratified 80/20 split (seed 42), cached early activations,
then a linear probe and several late-stage fine-tuning variants on the same split, with their wall times.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snake_model.network import build_network  # noqa: E402
from snake_model.spec import ModelSpec  # noqa: E402
from train.data import list_images, random_split  # noqa: E402
from train.recipe_fast import _train, cache_views, split_body  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_dir", type=Path)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--views", type=int, default=6)
    ap.add_argument("--variants", default="all")
    a = ap.parse_args()
    if not a.data_dir.is_dir():
        print(f"skip: {a.data_dir} not found")
        return 0
    ds = list_images(a.data_dir)
    tr_i, va_i = random_split(ds, 0.2, 42)
    spec = ModelSpec(labels=ds.classes, image_size=a.size, resize_method="squish")
    base = build_network("tf_efficientnet_lite0", len(ds.classes), pretrained=True).eval()
    stem4, _ = split_body(base, 4)
    tp = [ds.paths[i] for i in tr_i]
    vp = [ds.paths[i] for i in va_i]
    ytr = torch.tensor([ds.labels[i] for i in tr_i])
    yva = np.array([ds.labels[i] for i in va_i])
    t = time.time()
    tr4 = cache_views(stem4, tp, spec, a.views, 0.35, 0, "cache", True, "cpu")
    va4 = cache_views(stem4, vp, spec, 1, 0.35, 0, "cache", True, "cpu")
    print(f"cache cut4 {a.views} views: {time.time() - t:.0f}s", flush=True)
    blk4 = base.body.blocks[4].eval()
    with torch.inference_mode():
        tr5 = torch.stack(
            [
                torch.cat([blk4(tr4[v, s : s + 64].float()).half() for s in range(0, tr4.shape[1], 64)])
                for v in range(tr4.shape[0])
            ]
        )
        va5 = torch.stack(
            [torch.cat([blk4(va4[v, s : s + 64].float()).half() for s in range(0, va4.shape[1], 64)]) for v in range(1)]
        )
    # linear probe on pooled full-body features (view 0), as in the issue
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    _, tail5 = split_body(base, 5)
    with torch.inference_mode():
        ftr = torch.cat([tail5(tr5[0, s : s + 64].float()).mean((2, 3)) for s in range(0, tr5.shape[1], 64)]).numpy()
        fva = torch.cat([tail5(va5[0, s : s + 64].float()).mean((2, 3)) for s in range(0, va5.shape[1], 64)]).numpy()
    sc = StandardScaler().fit(ftr)
    for C in (0.01, 0.1, 1.0):
        lr = LogisticRegression(C=C, max_iter=3000).fit(sc.transform(ftr), ytr.numpy())
        print(f"probe C={C}: error {(lr.predict(sc.transform(fva)) != yva).mean():.3f}", flush=True)

    def run(name, cut, views, head_ep, tail_ep, lr, ls, wd=0.05, bn_frozen=False):
        m = copy.deepcopy(base)
        _, tail = split_body(m, cut)
        head = m.head
        trc, vac = (tr4, va4) if cut == 4 else (tr5, va5)
        trc = trc[:views]
        t0 = time.time()
        if head_ep:
            with torch.inference_mode():
                tail.eval()
                pooled = torch.stack(
                    [
                        torch.cat([tail(trc[v, s : s + 64].float()) for s in range(0, trc.shape[1], 64)])
                        for v in range(views)
                    ]
                )
            _train(torch.nn.Sequential(head), head, pooled, ytr, head_ep, lr * 3, wd, ls, 64, 0, "h", True, "cpu")
        both = torch.nn.ModuleDict({"t": tail, "h": head})
        if bn_frozen:
            for mod in tail.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    for p in mod.parameters():
                        p.requires_grad_(False)

        def fwd(x):
            return head(tail(x))

        if bn_frozen:

            def fwd(x):
                tail.eval()
                return head(tail(x))

        if tail_ep:
            _train(both, fwd, trc, ytr, tail_ep, lr, wd, ls, 64, 1, "t", True, "cpu")
        with torch.inference_mode():
            lg = torch.cat([head(tail(vac[0, s : s + 64].float())) for s in range(0, vac.shape[1], 64)]).numpy()
        err = (lg.argmax(1) != yva).mean()
        print(
            f"{name}: cut={cut} views={views} head={head_ep} tail={tail_ep} lr={lr} ls={ls} bn_frozen={bn_frozen}: "
            f"error {err:.3f} ({time.time() - t0:.0f}s)",
            flush=True,
        )

    run("head only", 5, 4, 30, 0, 1e-3, 0.1)
    run("default", 5, 4, 30, 8, 1e-3, 0.1)
    run("6 views", 5, 6, 30, 8, 1e-3, 0.1)
    run("15 epochs", 5, 4, 30, 15, 1e-3, 0.1)
    run("cut4", 4, 4, 30, 8, 1e-3, 0.1)
    run("bn frozen", 5, 4, 30, 8, 1e-3, 0.1, bn_frozen=True)
    run("lr 3e-3", 5, 4, 30, 8, 3e-3, 0.1)
    run("no ls", 5, 4, 30, 8, 1e-3, 0.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
