"""The project's default recipe: cache the frozen early layers once, then train the late layers and the head.

Most of EfficientNet's compute sits in its early, high-resolution stages. Their ImageNet features are good as
they are, so they run once per image view (a few augmented views are cached); the late stages and the head
then train for several epochs on the cached activations, at a small fraction of a full fine-tune's cost.
The artifact is the ordinary full network: serving does not know how it was trained.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from snake_model.loader import load_image
from snake_model.network import SnakeNet, build_network
from snake_model.preprocess import preprocess, to_array
from snake_model.spec import ModelSpec

from .data import Dataset

log = logging.getLogger(__name__)

# Defaults chosen by the experiments in bench/RESULTS.md.
FAST = {
    "cut": 5,  # blocks[:cut] stay frozen and are cached; blocks[cut:], conv_head and the head train
    "views": 4,  # cached views per training image: plain, mirrored, and random-resized crops
    "min_scale": 0.35,
    "head_epochs": 30,
    "tail_epochs": 8,
    "lr": 1e-3,
    "wd": 0.05,
    "label_smoothing": 0.1,
    "bs": 64,
}


def split_body(model: SnakeNet, cut: int) -> tuple[nn.Module, nn.Module]:
    """(frozen stem+blocks[:cut], trainable blocks[cut:]+conv_head+bn2) for a timm EfficientNet body."""
    b = model.body
    if not hasattr(b, "blocks") or not hasattr(b, "conv_stem"):
        raise ValueError(f"the fast recipe needs an EfficientNet-style timm body, not {type(b).__name__}")
    cut = max(0, min(cut, len(b.blocks)))
    stem = nn.Sequential(b.conv_stem, b.bn1, *b.blocks[:cut])
    tail = nn.Sequential(*b.blocks[cut:], b.conv_head, b.bn2)
    return stem, tail


def _rrc_view(img, spec: ModelSpec, rng: np.random.Generator, min_scale: float) -> np.ndarray:
    """A RandomResizedCrop-style view (area in [min_scale, 1], aspect 3/4..4/3), squished to the model size."""
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(min_scale, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            crop = img.crop((x0, y0, x0 + cw, y0 + ch))
            break
    else:
        crop = img
    from PIL import Image

    crop = crop.resize((spec.image_size, spec.image_size), Image.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    return to_array(crop, spec)


@torch.inference_mode()
def cache_views(
    stem: nn.Module, paths, spec: ModelSpec, views: int, min_scale: float, seed: int, desc: str, quiet: bool, device
):
    """Run the frozen stem over `views` views of every image; returns a (views, N, C, H, W) float16 tensor."""
    rng = np.random.default_rng(seed)
    stem = stem.eval().to(device)
    out = None
    bs = 32
    bar = tqdm(total=len(paths) * views, desc=desc, unit="view", disable=quiet)
    for start in range(0, len(paths), bs):
        imgs = [load_image(p) for p in paths[start : start + bs]]
        for v in range(views):
            if v == 0:
                arr = [preprocess(im, spec) for im in imgs]
            elif v == 1:
                arr = [preprocess(im, spec)[:, :, ::-1] for im in imgs]
            else:
                arr = [_rrc_view(im, spec, rng, min_scale) for im in imgs]
            x = torch.from_numpy(np.ascontiguousarray(np.stack(arr))).to(device)
            y = stem(x).to("cpu", torch.float16)
            if out is None:
                out = torch.empty((views, len(paths), *y.shape[1:]), dtype=torch.float16)
            out[v, start : start + len(imgs)] = y
            bar.update(len(imgs))
    bar.close()
    return out


def _one_cycle(opt, total_steps: int, lr: float):
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total_steps, 1), pct_start=0.25)


def _train(
    params_model: nn.Module,
    forward,
    feats: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    lr: float,
    wd: float,
    ls: float,
    bs: int,
    seed: int,
    desc: str,
    quiet: bool,
    device,
) -> None:
    """Minibatch AdamW + one-cycle over cached views; each step samples one random view per image."""
    g = torch.Generator().manual_seed(seed)
    views, n = feats.shape[0], feats.shape[1]
    params = [p for p in params_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    steps = epochs * math.ceil(n / bs)
    sched = _one_cycle(opt, steps, lr)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=ls)
    params_model.train()
    bar = tqdm(total=steps, desc=desc, unit="step", disable=quiet)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            if len(idx) < 2:
                continue
            v = torch.randint(0, views, (len(idx),), generator=g)
            x = feats[v, idx].to(device, torch.float32)
            loss = loss_fn(forward(x), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
            bar.update(1)
    bar.close()
    params_model.eval()


@torch.inference_mode()
def full_pass(model: SnakeNet, paths, spec: ModelSpec, bs: int = 32, desc: str = "", quiet: bool = True):
    """(logits, pooled features) through the whole network in float32, exactly as the predictor computes them."""
    logits, feats = [], []
    model = model.eval()
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=quiet)
    for s in range(0, len(paths), bs):
        x = torch.from_numpy(np.stack([preprocess(load_image(p), spec) for p in paths[s : s + bs]]))
        f = model.body(x)
        logits.append(model.head(f).numpy())
        feats.append(f.mean(dim=(2, 3)).numpy())
        bar.update(len(x))
    bar.close()
    if not logits:
        return np.zeros((0, len(spec.labels)), np.float32), np.zeros((0, 1), np.float32)
    return np.concatenate(logits), np.concatenate(feats)


def train_fast(ds: Dataset, train_idx, valid_idx, args: argparse.Namespace, device):
    """Run the fast recipe; return (model on CPU, spec, validation logits)."""
    torch.manual_seed(args.seed)
    hp = dict(FAST)
    if args.epochs is not None:
        hp["tail_epochs"] = args.epochs
    resize = args.resize or "squish"
    model = build_network(args.arch, len(ds.classes), head=args.head or "linear", pretrained=not args.no_pretrained)
    cfg = getattr(model.body, "pretrained_cfg", {}) or {}
    spec = ModelSpec(
        labels=list(ds.classes),
        arch=args.arch,
        head=args.head or "linear",
        image_size=args.size,
        resize_method=resize,
        mean=tuple(cfg.get("mean", (0.5, 0.5, 0.5))),
        std=tuple(cfg.get("std", (0.5, 0.5, 0.5))),
    )
    stem, tail = split_body(model, hp["cut"])
    for p in stem.parameters():
        p.requires_grad_(False)
    tr_paths = [ds.paths[i] for i in train_idx]
    va_paths = [ds.paths[i] for i in valid_idx]
    ytr = torch.tensor([ds.labels[i] for i in train_idx])
    tr = cache_views(stem, tr_paths, spec, hp["views"], hp["min_scale"], args.seed, "cache train", args.quiet, device)
    tail.to(device)
    head = model.head.to(device)

    # 1) head warm-up on pooled tail outputs of the cached views (tail frozen: computed once).
    with torch.inference_mode():
        tail.eval()
        pooled = torch.stack(
            [
                torch.cat([tail(tr[v, s : s + 64].to(device, torch.float32)).cpu() for s in range(0, tr.shape[1], 64)])
                for v in range(tr.shape[0])
            ]
        )
    head_only = nn.Sequential(head)
    _train(
        head_only,
        head,
        pooled,
        ytr,
        hp["head_epochs"],
        hp["lr"] * 3,
        hp["wd"],
        hp["label_smoothing"],
        hp["bs"],
        args.seed,
        "head",
        args.quiet,
        device,
    )

    # 2) unfreeze the late stages and train them with the head on the cached early activations.
    both = nn.ModuleDict({"tail": tail, "head": head})
    _train(
        both,
        lambda x: head(tail(x)),
        tr,
        ytr,
        hp["tail_epochs"],
        hp["lr"],
        hp["wd"],
        hp["label_smoothing"],
        hp["bs"],
        args.seed + 1,
        "fine-tune",
        args.quiet,
        device,
    )
    with torch.inference_mode():
        tail.eval()
        train_feats = torch.cat(
            [
                tail(tr[0, s : s + 64].to(device, torch.float32)).mean(dim=(2, 3)).cpu()
                for s in range(0, tr.shape[1], 64)
            ]
        ).numpy()
    model = model.cpu().eval()
    logits, valid_feats = full_pass(model, va_paths, spec, desc="validate", quiet=args.quiet)
    spec.training = {**hp, "pretrained": not args.no_pretrained}
    return copy.deepcopy(model), spec, logits, {"train_feats": train_feats, "valid_feats": valid_feats}
