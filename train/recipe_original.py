"""The fastai lesson-2 recipe: item resize (default RandomResizedCrop) + aug_transforms + fine_tune."""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

from snake_model.loader import load_image
from snake_model.network import build_network
from snake_model.spec import ModelSpec

from .data import Dataset, DatasetError

ORIGINAL_SIZE = 224  # the lesson's RandomResizedCrop(224)
PKL = "export.pkl"  # fit --export-pkl; train.push --also-pkl uploads it


def open_pil(path):
    """fastai type transform through the project's one loader (EXIF, modes, format allowlist)."""
    from fastai.vision.core import PILImage

    return PILImage(load_image(path))


def item_transform(resize: str, size: int, min_scale: float):
    from fastai.vision.all import RandomResizedCrop, Resize, ResizeMethod

    if resize == "rrc":
        return RandomResizedCrop(size, min_scale=min_scale)
    method = {"crop": ResizeMethod.Crop, "squish": ResizeMethod.Squish, "pad": ResizeMethod.Pad}[resize]
    return Resize(size, method=method)


def make_dls(
    ds: Dataset, train_idx, valid_idx, args: argparse.Namespace, device, mean, std, resize: str, bs: int | None = None
):
    """fastai DataLoaders over the listed files with the chosen item and batch transforms."""
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        IndexSplitter,
        IntToFloatTensor,
        ItemGetter,
        Normalize,
        TransformBlock,
        aug_transforms,
    )

    items = [(str(p), ds.classes[y]) for p, y in zip(ds.paths, ds.labels, strict=True)]
    order = list(train_idx) + list(valid_idx)
    items = [items[i] for i in order]
    splitter = IndexSplitter(list(range(len(train_idx), len(order))))
    batch_tfms = [*aug_transforms(mult=args.aug_mult)] if args.aug else []
    batch_tfms.append(Normalize.from_stats(list(mean), list(std)))
    block = DataBlock(
        blocks=(
            TransformBlock(type_tfms=open_pil, batch_tfms=IntToFloatTensor),
            CategoryBlock(vocab=ds.classes, sort=False),
        ),
        get_x=ItemGetter(0),
        get_y=ItemGetter(1),
        splitter=splitter,
        item_tfms=item_transform(resize, args.size or ORIGINAL_SIZE, args.min_scale),
        batch_tfms=batch_tfms,
    )
    return block.dataloaders(items, bs=bs or args.bs, num_workers=args.workers, device=device)


def make_learner(dls, model, device):
    """A Learner equivalent to vision_learner's: body/head split, frozen body, fp16 on CUDA."""
    from fastai.vision.all import CrossEntropyLossFlat, Learner, error_rate, params

    learn = Learner(
        dls,
        model,
        loss_func=CrossEntropyLossFlat(),
        metrics=error_rate,
        splitter=lambda m: [params(m.body), params(m.head)],
    )
    if device.type == "cuda":
        learn.to_fp16()
    learn.freeze()
    return learn


def save_batch_preview(dls, path) -> None:
    """A 3x3 grid of augmented training images, as fastai's show_batch draws them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        path.parent.mkdir(parents=True, exist_ok=True)
        dls.show_batch(max_n=9, figsize=(7, 7))
        plt.gcf().savefig(path)
        plt.close("all")
    except Exception as e:  # noqa: BLE001 - a preview picture must not lose a trained model
        print(f"warning: could not draw the batch preview ({e})")


def valid_logits(learn) -> np.ndarray:
    from fastai.vision.all import noop

    logits, _ = learn.get_preds(ds_idx=1, act=noop)
    return logits.float().cpu().numpy()


def train_original(ds: Dataset, train_idx, valid_idx, args: argparse.Namespace, device):
    """Run the lesson-2 recipe; return (model on CPU, spec, validation logits)."""
    from fastai.vision.all import set_seed

    set_seed(args.seed, reproducible=True)
    resize = args.resize or "rrc"
    head = args.head or "fastai"
    epochs = 4 if args.epochs is None else args.epochs
    model = build_network(args.arch, len(ds.classes), head=head, pretrained=not args.no_pretrained)
    cfg = model.body.pretrained_cfg if hasattr(model.body, "pretrained_cfg") else {}
    mean, std = tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    # fastai drops the last partial training batch: with fewer training images than --bs there would be no batch
    # at all, and an untrained model would be published
    bs = min(args.bs, len(train_idx))
    if bs < args.bs:
        print(f"note: only {len(train_idx)} training images, fewer than --bs {args.bs}: using batch size {bs}")
    dls = make_dls(ds, train_idx, valid_idx, args, device, mean, std, resize, bs=bs)
    learn = make_learner(dls, model, device)
    with contextlib.ExitStack() as quiet:
        if args.quiet:  # no progress bars, and no per-epoch rows (fastai prints them as raw lists without the bar)
            quiet.enter_context(learn.no_bar())
            quiet.enter_context(learn.no_logging())
        learn.fine_tune(epochs, base_lr=args.lr, freeze_epochs=args.freeze_epochs)
        if not learn.recorder.losses:  # never publish a model that saw no training batch (get_preds resets them)
            raise DatasetError(
                f"no training batch was run ({len(train_idx)} training images, batch size {bs}); add photos or lower "
                "--bs"
            )
        logits = valid_logits(learn)
    if not args.no_photo_previews:
        save_batch_preview(dls, args.out / "batch_preview.png")
    if getattr(args, "export_pkl", False):
        if device.type == "cuda":
            learn.to_fp32()  # a pickle that loads on CPU
        learn.export(args.out.resolve() / PKL)
    model = learn.model.float().cpu().eval()
    spec = ModelSpec(
        labels=list(dls.vocab),
        arch=args.arch,
        head=head,
        image_size=args.size or ORIGINAL_SIZE,
        resize_method=resize,
        mean=mean,
        std=std,
        training={
            "epochs": epochs,
            "freeze_epochs": args.freeze_epochs,
            "lr": args.lr,
            "aug": args.aug,
            "aug_mult": args.aug_mult,
            "min_scale": args.min_scale,
            "bs": bs,
            "pretrained": not args.no_pretrained,
        },
    )
    return model, spec, logits, {}
