"""Does fine-tuning the whole of Lite0 on the 2-core CPU beat the default's frozen features in the same time?

python bench/exp_finetune_full.py DATA_DIR [--size 160] [--epochs 5] [--lr 3e-4] [--head-lr 3e-3] [--bn frozen]
    [--folds 0,1,2,3,4] [--eval-sizes 160,224]

Stratified 5-fold CV (fold seed 0, the folds of `bench.exp_cv.cv_scores`). In each fold a fresh ImageNet Lite0 with
a zero-initialised linear head is trained end to end on the training folds: AdamW (weight decay 0.01 on the body),
one-cycle learning rate (the body's --lr, the head's --head-lr), label smoothing 0.1, batches of 32 random resized
crops (scale 0.35-1, randomly mirrored) squished to --size px, channels-last memory (about twice as fast on this CPU
as the default layout). Batch norm keeps ImageNet's statistics (--bn frozen) or learns the batch's (--bn train). The
held-out fold is scored as the default serves it: centre crop at each --eval-sizes size, the photo and its zoomed
mirror view averaged. Prints each fold's training seconds and error / NLL, then the pooled error / NLL.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.exp_cv import labelled_sets  # noqa: E402


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="exp_finetune_full.py", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("data", help="a folder with one subfolder of photos per class")
    p.add_argument("--size", type=int, default=160, help="training crop size, px (default 160)")
    p.add_argument("--epochs", type=int, default=5, help="epochs (default 5)")
    p.add_argument("--lr", type=float, default=3e-4, help="the body's peak learning rate (default 3e-4)")
    p.add_argument("--head-lr", type=float, default=3e-3, help="the head's peak learning rate (default 3e-3)")
    p.add_argument("--bn", choices=("frozen", "train"), default="frozen", help="batch-norm statistics (default frozen)")
    p.add_argument("--folds", default="0,1,2,3,4", help="which of the 5 folds to run (default all)")
    p.add_argument("--eval-sizes", default="160,224", help="served sizes to score, px (default 160,224)")
    a = p.parse_args(argv)
    try:
        a.folds = [int(f) for f in a.folds.split(",")]
        a.eval_sizes = [int(s) for s in a.eval_sizes.split(",")]
    except ValueError:
        p.error("--folds and --eval-sizes take comma-separated whole numbers, such as 0,1 and 160,224")
    if not all(0 <= f < 5 for f in a.folds):
        p.error("--folds are numbered 0 to 4")
    if not all(32 <= s <= 1024 for s in [a.size, *a.eval_sizes]) or a.epochs < 1 or a.lr <= 0 or a.head_lr <= 0:
        p.error("sizes must be 32-1024 px, --epochs at least 1 and learning rates positive")
    return a


def train_fold(imgs, y: np.ndarray, tr: np.ndarray, n_classes: int, a: argparse.Namespace, seed: int):
    import torch

    from snake_model.network import build_network
    from snake_model.preprocess import preprocess
    from snake_model.spec import ModelSpec
    from train.recipe_fast import random_resized_crop

    torch.manual_seed(seed)
    net = build_network("tf_efficientnet_lite0", n_classes, pretrained=True).to(memory_format=torch.channels_last)
    fc = [m for m in net.head.modules() if isinstance(m, torch.nn.Linear)][0]
    torch.nn.init.zeros_(fc.weight)
    torch.nn.init.zeros_(fc.bias)
    spec = ModelSpec(labels=[str(i) for i in range(n_classes)], image_size=a.size, resize_method="squish")
    opt = torch.optim.AdamW(
        [
            {"params": net.body.parameters(), "lr": a.lr, "weight_decay": 0.01},
            {"params": net.head.parameters(), "lr": a.head_lr, "weight_decay": 0.0},
        ]
    )
    bs = 32
    steps = a.epochs * (len(tr) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[a.lr, a.head_lr], total_steps=steps, pct_start=0.2)
    rng = np.random.default_rng(seed)
    x = np.empty((bs, 3, a.size, a.size), np.float32)
    net.train()
    if a.bn == "frozen":
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    for _ in range(a.epochs):
        perm = rng.permutation(tr)
        for s in range(0, len(perm) - bs + 1, bs):
            b = perm[s : s + bs]
            for j, i in enumerate(b):
                preprocess(random_resized_crop(imgs[i], rng, (0.35, 1.0)), spec, out=x[j])
            xb = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
            loss = torch.nn.functional.cross_entropy(net(xb), torch.from_numpy(y[b]), label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def score(net, imgs, y: np.ndarray, va: np.ndarray, size: int) -> tuple[int, float]:
    """(wrong, summed NLL) on the held-out photos, served as the default serves them at `size` px."""
    import torch

    from snake_model.network import SnakeNet
    from snake_model.preprocess import preprocess
    from snake_model.spec import ModelSpec
    from train.recipe_fast import FAST

    served = SnakeNet(net.body, net.head, tta_flip=True, tta_zoom=FAST["tta_zoom"]).eval()
    spec = ModelSpec(labels=["x"], image_size=size, resize_method="crop")
    xe = np.stack([preprocess(imgs[i], spec) for i in va])
    with torch.inference_mode():
        lg = torch.cat(
            [
                served(torch.from_numpy(xe[s : s + 64]).contiguous(memory_format=torch.channels_last))
                for s in range(0, len(va), 64)
            ]
        )
    pr = torch.softmax(lg.float(), 1).numpy()
    nll = float(-np.log(np.clip(pr[np.arange(len(va)), y[va]], 1e-12, 1)).sum())
    return int((pr.argmax(1) != y[va]).sum()), nll


def main() -> int:
    a = parse(sys.argv[1:])
    sets = list(labelled_sets([a.data]))
    if not sets:
        return 0
    from sklearn.model_selection import StratifiedKFold

    from snake_model.loader import load_image

    data, ds, y = sets[0]
    imgs = [load_image(p) for p in ds.paths]
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y))
    wrong = dict.fromkeys(a.eval_sizes, 0)
    nll = dict.fromkeys(a.eval_sizes, 0.0)
    n = 0
    for f in a.folds:
        tr, va = folds[f]
        t = time.perf_counter()
        net = train_fold(imgs, y, tr, len(ds.classes), a, seed=f)
        secs = time.perf_counter() - t
        res = []
        for size in a.eval_sizes:
            w, loss = score(net, imgs, y, va, size)
            wrong[size] += w
            nll[size] += loss
            res.append(f"served at {size} px: {w / len(va):.1%} / {loss / len(va):.3f}")
        n += len(va)
        print(f"{data.name} fold {f} ({secs:.0f} s training): " + "  ".join(res), flush=True)
    print(
        f"{data.name} all folds run: "
        + "  ".join(f"{s} px: {wrong[s] / n:.1%} / {nll[s] / n:.3f}" for s in a.eval_sizes)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
