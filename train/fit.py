"""python -m train.fit DATA_DIR --out DIR: fine-tune an ImageNet CNN on class folders, write a safe artifact."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from snake_model.artifact import save_artifact
from snake_model.loader import load_image
from snake_model.network import DEFAULT_ARCH, FAST_ARCH
from snake_model.spec import RESIZE_METHODS, ModelSpec, split_arch
from snake_model.text import error_line

from . import metrics as M
from . import plots
from .cli import FRACTION, NON_NEGATIVE, POSITIVE, DefaultsHelpFormatter, int_at_least, number
from .data import (
    BACKGROUND_LABEL,
    Dataset,
    DatasetError,
    check_every_class_trains,
    class_dirs,
    classes_without,
    list_images,
    random_split,
    read_class_info,
    read_splits,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger("train.fit")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.fit",
        description="Fine-tune an ImageNet CNN on DATA_DIR (one sub-folder of images per class) and write a "
        "safe artifact (model.safetensors + config.json) with metrics.json and pictures of the run.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("data_dir", type=Path, help="folder with one sub-folder of images per class")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to write (created if missing)")
    p.add_argument(
        "--recipe",
        choices=("fast", "original"),
        default="fast",
        help="'fast': the project's default (see bench/RESULTS.md); 'original': the fastai lesson-2 recipe, "
        "RandomResizedCrop + aug_transforms + fine_tune, fully controlled by the options below",
    )
    p.add_argument(
        "--arch",
        default=None,
        help="timm model name, or several joined by '+' to use their features side by side (fast recipe); offline "
        f"ImageNet weights for tf_efficientnet_lite0/1/2 only. Default: {FAST_ARCH} (fast), "
        f"{DEFAULT_ARCH} (original)",
    )
    p.add_argument(
        "--size",
        type=int_at_least(32),
        default=None,
        help="image size fed to the network, square pixels (default: 224 original, 320 fast)",
    )
    p.add_argument(
        "--resize",
        choices=RESIZE_METHODS,
        default=None,
        help="item resize: crop (centre crop at validation), squish, pad (reflection), rrc (RandomResizedCrop); "
        "default: rrc for --recipe original, crop for fast",
    )
    p.add_argument(
        "--min-scale",
        type=number(0, 1, lo_open=True),
        default=0.5,
        help="RandomResizedCrop min_scale (with --resize rrc)",
    )
    p.add_argument(
        "--aug",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="augmentation: fastai aug_transforms (original); the fast recipe also fits its head on 4 random "
        "resized crops of every training image",
    )
    p.add_argument(
        "--tta",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fast recipe: the network averages two views of every photo, the photo and a second view set by "
        "--tta-zoom (2x serving compute)",
    )
    p.add_argument(
        "--tta-zoom",
        type=number(0.3, 1),
        default=None,
        help="fast recipe with --tta: the mirror view shows the central part of this size, zoomed to full size "
        "(default 0.8, chosen in bench/RESULTS.md 1i; 1 = the whole photo mirrored)",
    )
    p.add_argument(
        "--int8",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fast recipe: quantize the network's bodies to int8 (ONNX Runtime, ranges from 64 training photos), "
        "fit the head on the int8 features and serve the same int8 graph: ~1.5-2x faster on a CPU, same accuracy "
        "(bench/RESULTS.md 1m). Default: on for --device cpu, off on a GPU",
    )
    p.add_argument("--aug-mult", type=NON_NEGATIVE, default=1.0, help="aug_transforms mult (strength of augmentation)")
    p.add_argument("--epochs", type=int_at_least(1), default=None, help="fine_tune epochs (original recipe; default 4)")
    p.add_argument(
        "--freeze-epochs", type=int_at_least(0), default=1, help="frozen epochs before unfreezing (original recipe)"
    )
    p.add_argument("--lr", type=POSITIVE, default=2e-3, help="base learning rate for fine_tune (original recipe)")
    p.add_argument("--head", choices=("fastai", "linear"), default=None, help="classifier head (default: by recipe)")
    p.add_argument(
        "--valid-pct",
        type=FRACTION,
        default=0.2,
        help="validation share when DATA_DIR has no splits.csv (and of --background photos)",
    )
    p.add_argument("--seed", type=int, default=42, help="random seed for the split and training")
    p.add_argument("--bs", type=int_at_least(1), default=32, help="batch size (original recipe)")
    p.add_argument("--workers", type=int_at_least(0), default=0, help="data loader worker processes (original recipe)")
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: cuda when there is a GPU; the original recipe trains there with mixed precision",
    )
    p.add_argument("--no-pretrained", action="store_true", help="start from random weights (tests, ablations)")
    p.add_argument(
        "--background", type=Path, default=None, help=f"folder of decoy photos: adds a {BACKGROUND_LABEL!r} class"
    )
    p.add_argument("--classes", type=Path, default=None, help="JSON {label: {display_name, scientific_name, venomous}}")
    p.add_argument(
        "--max-false-abstain",
        type=number(0, 1, hi_open=True),
        default=0.03,
        help="abstain threshold: share of valid images abstained at most",
    )
    p.add_argument(
        "--data-source", default="", help="one line for the model card: where the photos came from, their licences"
    )
    p.add_argument(
        "--no-photo-previews",
        action="store_true",
        help="do not draw training photos into top_losses.png / batch_preview.png (for photos you may not redistribute)",
    )
    p.add_argument(
        "--export-pkl",
        action="store_true",
        help="--recipe original only: also write fastai's export.pkl (learn.export(); a pickle, for fastai users, "
        "loaded with load_learner from this project's checkout; the app never reads it; push it with --also-pkl)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars and no per-epoch rows")
    return p


def load_dataset(args: argparse.Namespace) -> tuple[Dataset, list[int], list[int]]:
    """List and verify DATA_DIR (+ background), then split by splits.csv or stratified random."""
    if args.background is not None:
        check_background_dir(Path(args.background), Path(args.data_dir))
    ds = list_images(args.data_dir, verify=True)
    split = read_splits(ds)  # the data folder's own images only
    if args.background is not None:
        n_data = len(ds.paths)
        bg = sorted(p for p in Path(args.background).rglob("*") if p.is_file())
        listed = {p.resolve() for p in ds.paths}
        twice = [p for p in bg if p.resolve() in listed]
        if twice:  # a link from the decoy folder to a class photo, say
            raise DatasetError(
                f"--background {args.background} holds {len(twice)} photo(s) that DATA_DIR also lists as class "
                f"photos (first: {twice[0]}), so they would be labelled both as their class and as "
                f"{BACKGROUND_LABEL}; give a folder of decoy photos only"
            )
        ok = []
        for p in bg:
            try:
                load_image(p)
                ok.append(p)
            except ValueError as e:
                ds.skipped[str(p)] = str(e)
        if not ok:
            raise DatasetError(f"--background {args.background} has no readable images")
        ds.classes.append(BACKGROUND_LABEL)
        ds.paths += ok
        ds.labels += [len(ds.classes) - 1] * len(ok)
        if split is not None:  # splits.csv keeps its leak-free split; the decoys are split at random
            bg_idx = list(range(n_data, len(ds.paths)))
            np.random.default_rng(args.seed).shuffle(bg_idx)
            k = min(max(1, round(len(bg_idx) * args.valid_pct)), len(bg_idx) - 1)  # keep one to train on
            split = (split[0] + sorted(bg_idx[k:]), split[1] + sorted(bg_idx[:k]))
    if split is None:
        split = random_split(ds, args.valid_pct, args.seed)
    check_every_class_trains(ds, split[0], "add photos to them, or give a smaller --valid-pct")
    return ds, split[0], split[1]


def check_background_dir(bg: Path, data_dir: Path) -> None:
    """--background must not hold photos of a class: DATA_DIR, a class folder (or a folder inside one) or a folder
    holding DATA_DIR would label the same photos twice (as their class and as not_a_snake). A folder under one of
    DATA_DIR's non-class folders (_not_snake, which train.clean fills with decoys, _trash, ...) is allowed."""
    b, d = bg.resolve(), data_dir.resolve()
    fix = (
        "give a separate folder of decoy photos, outside DATA_DIR or in one of its non-class folders such as "
        f"{data_dir / '_not_snake'}"
    )
    if b == d or d.is_relative_to(b):
        where = "is DATA_DIR" if b == d else "holds DATA_DIR"
        raise DatasetError(
            f"--background {bg} {where} {data_dir}, so DATA_DIR's class photos would be labelled both as their "
            f"class and as {BACKGROUND_LABEL}; {fix}"
        )
    if b.is_relative_to(d):
        top = b.relative_to(d).parts[0]
        if d.is_dir() and any(c.name == top for c in class_dirs(d)):
            where = "is the class folder" if b == d / top else "is inside the class folder"
            raise DatasetError(
                f"--background {bg} {where} {top!r} of DATA_DIR {data_dir}, so its photos would be labelled both "
                f"as {top} and as {BACKGROUND_LABEL}; {fix}"
            )


def check_out_outside_data(out: Path, data_dir: Path) -> None:
    """--out inside DATA_DIR would become a class of the next run (the model's own pictures): refuse it."""
    o, d = out.resolve(), Path(data_dir).resolve()
    if o.is_relative_to(d):
        raise DatasetError(
            f"--out {out} is inside DATA_DIR {data_dir}: the next run would train on the model's own pictures as "
            f"a class; write the model outside the data folder, e.g. --out runs/{o.name}"
        )


def pick_device(choice: str):
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise DatasetError("--device cuda was asked for but no CUDA GPU is available")
    if choice == "auto":
        choice = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(choice)


def load_class_info(args: argparse.Namespace) -> dict:
    """--classes (which must exist) or DATA_DIR/classes.json (when present): {label: {display_name, ...}}."""
    if args.classes is not None and not Path(args.classes).is_file():
        raise DatasetError(f"--classes {args.classes} is not a file")
    f = Path(args.classes or (args.data_dir / "classes.json"))
    return read_class_info(f) if f.is_file() else {}


def check_arch(arch: str, pretrained: bool) -> None:
    """Refuse an unknown --arch, or offline weights whose package is missing, before any work is done."""
    import timm

    from snake_model.network import _LITE_WHEELS, lite_weights_path
    from snake_model.spec import SpecError, check_arch_name

    for name in split_arch(arch):
        if not timm.is_model(name):
            raise DatasetError(f"unknown --arch {name!r}: use a timm model name such as {DEFAULT_ARCH}")
    try:
        check_arch_name(arch)  # what config.json may hold: plain names (no hf-hub:, no .pretrained_tag)
    except SpecError as e:
        raise DatasetError(f"--arch {arch!r}: {e}") from e
    for name in split_arch(arch):
        if pretrained and name in _LITE_WHEELS:
            try:
                lite_weights_path(name)
            except ValueError as e:
                raise DatasetError(str(e)) from e


# The files a model folder holds; a re-run into the same --out replaces them all (a stale top_losses.png of the
# previous model must not stay behind, linked from the new card).
ARTIFACT_FILES = (
    "model.safetensors",
    "ood.safetensors",
    "features.int8.onnx",
    "metrics.json",
    "confusion_matrix.png",
    "top_losses.png",
    "reliability.png",
    "batch_preview.png",
    "README.md",
    "ATTRIBUTION.md",
    "export.pkl",
    "config.json",
)


def check_out_dir(out: Path) -> None:
    """--out must be new, empty or an earlier model folder: never a data folder given by mistake."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"--out {out} is a file; give a folder for the model")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").is_file():
        raise DatasetError(
            f"--out {out} already holds files and is not a model folder (it has no config.json); give a new or "
            "empty folder, so that nothing in it is overwritten"
        )


def staging_dir(out: Path) -> Path:
    """A hidden sibling of out, on the same file system, where the new model is written before it replaces out."""
    d = out.resolve().parent / f".{out.name}.fit-{uuid.uuid4().hex[:8]}"
    d.mkdir(parents=True)
    return d


def publish(staging: Path, out: Path) -> None:
    """Move a finished model from staging into out, config.json last: until then out holds the previous model.

    Files that are not part of a model (notes of yours, a push-dry-run folder) stay as they are. The moves are not
    one atomic step (new weights sit next to the old config.json for a moment), so SIGTERM, SIGHUP and Ctrl-C are
    held until the last one is done, then delivered: a signal leaves out with the whole old model or the whole new one.
    """
    with signals_held():
        out.mkdir(parents=True, exist_ok=True)
        new = {p.name for p in staging.iterdir()}
        for name in ARTIFACT_FILES:
            if name not in new and (out / name).is_file():
                (out / name).unlink()
        for p in sorted(staging.iterdir(), key=lambda p: p.name == "config.json"):
            os.replace(p, out / p.name)
        staging.rmdir()


# SIGTERM and SIGHUP end a run cleanly (catch_termination); SIGINT (Ctrl-C) raises KeyboardInterrupt.
TERMINATION_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))
HELD_SIGNALS = (*TERMINATION_SIGNALS, signal.SIGINT)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGTERM, SIGHUP and SIGINT while the body runs; afterwards, put the handlers back and deliver the first
    signal that came to its own handler. An ignored signal stays ignored; off the main thread (which gets no Python
    signal handlers), no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    for s in HELD_SIGNALS:
        old = signal.getsignal(s)
        if old is not signal.SIG_IGN:
            previous[s] = signal.SIG_DFL if old is None else old  # None: set outside Python
            signal.signal(s, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if caught:
            signal.raise_signal(caught[0])  # runs its handler now: SystemExit, KeyboardInterrupt or the end


def calibration_temperature(logits: np.ndarray, y: np.ndarray, extra: dict) -> tuple[float, dict[str, int]]:
    """The temperature, fitted on the validation logits plus, when the recipe gives them, its out-of-fold logits
    on the training images ("oof_logits", "oof_y"); and how many images of each kind it was fitted on.

    A temperature from ~170 validation photos alone moves by +-0.08-0.14 between splits; pooled with the
    out-of-fold predictions it moves by +-0.01-0.05 and ties on held-out NLL and ECE (bench/RESULTS.md section 1e).
    """
    oof, oof_y = extra.get("oof_logits"), extra.get("oof_y")
    if oof is None or oof_y is None or len(oof) == 0:
        return M.fit_temperature(logits, y), {"valid": int(len(y))}
    t = M.fit_temperature(np.concatenate([logits, oof]), np.concatenate([y, oof_y]))
    return t, {"valid": int(len(y)), "out_of_fold_train": int(len(oof))}


def write_outputs(
    model, spec: ModelSpec, ds: Dataset, valid_idx: list[int], logits: np.ndarray, out: Path, extra: dict
) -> dict:
    """Calibrate, choose the abstain threshold, save the artifact, metrics.json and the pictures."""
    from snake_model.ood import choose_threshold, knn_scores, make_bank
    from snake_model.predictor import softmax

    from .card import BACKGROUND_PREFIX
    from .recipe_fast import full_pass

    # y indexes the model's labels (its logits' columns), whatever order the dataset listed its classes in
    column = {name: j for j, name in enumerate(spec.labels)}
    y = np.asarray([column[ds.classes[ds.labels[i]]] for i in valid_idx])
    # the real classes' photos: the abstain threshold and rate are about snakes, not the --background decoys
    real = y != column.get(BACKGROUND_LABEL, -1)
    if not real.any():
        real[:] = True
    probs_raw = softmax(logits)
    spec.temperature, t_fit_on = calibration_temperature(logits, y, extra)
    probs = softmax(logits, spec.temperature)
    # Abstain: kNN distance of pooled features to the training images, threshold set on validation photos.
    train_feats = extra.get("train_feats")
    if train_feats is None:
        _, train_feats = full_pass(model, extra["train_paths"], spec, desc="features", quiet=extra["quiet"])
    valid_feats = extra.get("valid_feats")
    if valid_feats is None:
        _, valid_feats = full_pass(model, [ds.paths[i] for i in valid_idx], spec, desc="features", quiet=extra["quiet"])
    bank = make_bank(train_feats)
    spec.ood = {"k": 5}
    valid_scores = knn_scores(valid_feats, bank, 5)
    spec.abstain_threshold = choose_threshold(valid_scores[real], extra["max_false_abstain"])
    save_artifact(model, spec, out, ood_bank=bank, int8_graph=extra.get("int8_graph"))

    summary = M.summarize(probs, y, spec.labels, undefined=None)  # null where undefined (no validation images)
    cm = np.asarray(summary["confusion"])
    losses = -np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, 1))
    order = np.argsort(-losses)[:12]
    background = extra.get("background")

    def photo_name(p: Path) -> str:
        """How metrics.json names a photo: relative to DATA_DIR (as the manifest does), a --background decoy as
        card.BACKGROUND_PREFIX + its path in that folder; never an absolute path (metrics.json is published)."""
        p = Path(p)
        if p.is_relative_to(ds.root):
            return ds.rel(p)
        if background is not None and p.resolve().is_relative_to(Path(background).resolve()):
            return BACKGROUND_PREFIX + p.resolve().relative_to(Path(background).resolve()).as_posix()
        return BACKGROUND_PREFIX + p.name

    top = [
        {
            "path": photo_name(ds.paths[valid_idx[i]]),
            "actual": spec.labels[y[i]],
            "predicted": spec.labels[int(probs[i].argmax())],
            "loss": float(losses[i]),
            "prob_actual": float(probs[i, y[i]]),
        }
        for i in order
    ]
    metrics = {
        "valid_error": summary["error"],
        "n_train": extra["n_train"],
        "n_valid": summary["n"],
        "labels": spec.labels,
        "per_class": summary["per_class"],
        "confusion": summary["confusion"],
        "nll_before": M.nll(logits, y),
        "nll_after": M.nll(logits, y, spec.temperature),
        "ece_before": M.ece(probs_raw, y),
        "ece_after": summary["ece"],
        "ece_noise_floor": summary["ece_noise_floor"],
        "temperature": spec.temperature,
        "temperature_fit_on": t_fit_on,
        "abstain_threshold": spec.abstain_threshold,
        "abstain_score": spec.abstain_score,
        "valid_abstain_rate": float((valid_scores[real] > spec.abstain_threshold).mean()),
        "top_losses": top,
        "train_paths": [photo_name(p) for p in extra["train_paths"]],
        "valid_paths": [photo_name(ds.paths[i]) for i in valid_idx],
        "skipped_images": ds.skipped,
        "train_seconds": extra["train_seconds"],
        "recipe": spec.training.get("recipe"),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    # The model and its numbers are saved: what follows is optional, and never costs the trained model.
    optional_step(
        out / "confusion_matrix.png",
        lambda path: plots.confusion_png(cm, spec.labels, path, f"Validation ({summary['n']} images)"),
    )
    if extra.get("photo_previews", True):

        def top_losses(path: Path) -> None:
            ims = [load_image(ds.paths[valid_idx[i]]) for i in order[:9]]
            for im in ims:
                im.thumbnail((256, 256))
            caps = [f"{t['predicted']} / {t['actual']}\n{t['loss']:.2f} / {t['prob_actual']:.2f}" for t in top[:9]]
            plots.top_losses_png(ims, caps, path)

        optional_step(out / "top_losses.png", top_losses)
    optional_step(
        out / "reliability.png",
        lambda path: plots.reliability_png(M.reliability_bins(probs_raw, y), M.reliability_bins(probs, y), path),
    )
    data_dir = extra.get("data_dir")
    if data_dir is not None and (Path(data_dir) / "ATTRIBUTION.md").is_file():  # the card links to it
        optional_step(out / "ATTRIBUTION.md", lambda path: shutil.copyfile(Path(data_dir) / "ATTRIBUTION.md", path))
    write_card(out, data_dir)
    return metrics


def optional_step(path: Path, step: Callable[[Path], object]) -> bool:
    """Write one optional file of the model folder (a picture, the attribution copy); if that fails, warn, remove
    what it left half written and go on: the trained model is never lost for a picture. An OSError (disk full, no
    permission) stops the run before anything is published, as do SystemExit and KeyboardInterrupt."""
    try:
        step(path)
        return True
    except OSError:
        raise  # the disk is full or not writable: the whole run fails and --out keeps the previous model
    except Exception as e:  # noqa: BLE001 - any other failure of an optional file (a plotting bug, odd names)
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        print(f"warning: {path.name} not written ({error_line(e)}); the model is complete without it", file=sys.stderr)
        return False


def write_card(out: Path, data_dir: Path | None = None) -> None:
    """README.md model card from the real numbers and data_dir's gather manifest (licences), when it has one.

    Never fatal: a card that cannot be built (an unreadable manifest, a bug) is replaced by a minimal one, with a
    warning naming the failure; an OSError writing it (disk full, no permission) fails the run like any other."""
    try:
        from .card import build_card

        text = build_card(out, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - the trained model matters more than its card
        print(
            f"warning: the model card could not be built ({error_line(e)}); README.md is a minimal card instead "
            "(the model itself is complete)",
            file=sys.stderr,
        )
        text = fallback_card(out)
    optional_step(out / "README.md", lambda path: path.write_text(text, encoding="utf-8"))


def fallback_card(out: Path) -> str:
    """The minimal card: card.py's minimal_card when it has one, else this module's, else a few fixed lines."""
    makers = []
    with contextlib.suppress(Exception):
        from . import card

        if callable(getattr(card, "minimal_card", None)):
            makers.append(card.minimal_card)
    makers.append(minimal_card)
    for make in makers:
        try:
            text = make(out)
        except Exception:  # noqa: BLE001 - try the next, simpler card
            continue
        if isinstance(text, str) and text.strip():
            return text
    return (
        "# Image classifier\n\nThe model card could not be made; see config.json and metrics.json.\n\n"
        "Not for snakebite or medical decisions: a wrong answer can kill. Ask a professional.\n"
    )


def minimal_card(out: Path) -> str:
    spec = ModelSpec.load(out / "config.json")
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))

    def num(x) -> str:
        return f"{x:.2f}" if isinstance(x, int | float) else "n/a"

    def pct(x) -> str:
        return f"{x:.1%}" if isinstance(x, int | float) else "n/a"

    rows = "\n".join(
        f"| {spec.display_name(lab)} | {num(v['precision'])} | {num(v['recall'])} | {v['support']} |"
        for lab, v in m["per_class"].items()
    )
    return (
        f"# Image classifier: {len(spec.labels)} classes\n\n"
        f"Validation error {pct(m.get('valid_error'))} on {m.get('n_valid', '?')} images; arch `{spec.arch}`, "
        f"{spec.image_size} px.\n\n"
        f"| class | precision | recall | support |\n|---|---|---|---|\n{rows}\n\n"
        f"Reproduce: `{spec.training.get('command', '')}`\n\n"
        "Not for snakebite or medical decisions: a wrong answer can kill. Ask a professional.\n"
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.time()
    try:
        if args.export_pkl and args.recipe != "original":
            raise DatasetError(
                "--export-pkl needs --recipe original: the fast recipe trains no fastai Learner, so there is no "
                "export.pkl to write (the app and train.push need only model.safetensors and config.json)"
            )
        check_out_dir(args.out)
        check_out_outside_data(args.out, args.data_dir)
        if args.arch is None:
            args.arch = FAST_ARCH if args.recipe == "fast" else DEFAULT_ARCH
        if args.recipe == "original" and len(split_arch(args.arch)) > 1:
            raise DatasetError(
                f"--arch {args.arch!r} joins several backbones, which only the fast recipe trains; give the original "
                "recipe one timm model name"
            )
        if args.recipe == "original" and args.int8:
            raise DatasetError("--int8 is a fast-recipe option: the original recipe fine-tunes the whole network")
        check_arch(args.arch, pretrained=not args.no_pretrained)
        class_info = load_class_info(args)
        ds, train_idx, valid_idx = load_dataset(args)
        device = pick_device(args.device)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted before training; --out {args.out} is left as it was", file=sys.stderr)
        return 130
    if ds.skipped:
        print(
            f"skipping {len(ds.skipped)} unreadable file(s), listed in metrics.json; first: "
            f"{next(iter(ds.skipped.items()))}"
        )
    mixed = device.type == "cuda" and args.recipe == "original"  # the fast recipe's frozen features run in fp32
    print(
        f"{len(ds.classes)} classes, {len(train_idx)} train / {len(valid_idx)} valid images, device {device}"
        + (" (mixed precision)" if mixed else "")
    )
    no_valid = classes_without(ds, valid_idx)
    if no_valid:
        print(
            f"warning: class(es) {', '.join(map(repr, no_valid))} have no validation images: their precision, "
            "recall and F1 are undefined (null in metrics.json, n/a in the card) and left out of the macro F1; "
            "add photos to them, or give them validation photos in splits.csv"
        )
    if args.recipe == "original":
        from .recipe_original import train_original as trainer
    else:
        from .recipe_fast import train_fast as trainer
    out = args.out
    try:
        args.out = staging_dir(out)  # everything is written there first: a failed run leaves out as it was
    except OSError as e:
        print(f"error: cannot write next to --out {out}: {e.strerror or e}", file=sys.stderr)
        return 2
    previous = catch_termination(out, args.out)
    try:
        return finish(FitRun(args, argv, out, ds, train_idx, valid_idx, device, mixed, class_info, trainer, t0))
    except OSError as e:  # disk full, permissions: the new model is not published, the old one stays
        where = f" ({e.filename})" if e.filename else ""
        print(
            f"error: could not write the model{where}: {e.strerror or e}; --out {out} is left as it was. "
            "Free some space (or fix the permissions) and run the same command again.",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:  # Ctrl-C: no fastai traceback; the finally removes the staging folder
        if args.out.exists():
            print(f"interrupted; --out {out} is left as it was", file=sys.stderr)
        else:  # publish() held the signal until the new model was wholly in out
            print(f"interrupted after the new model was published in --out {out}", file=sys.stderr)
        return 130
    finally:
        args.out, staging = out, args.out
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def catch_termination(out: Path, staging: Path) -> dict:
    """Make SIGTERM (and SIGHUP) raise SystemExit during training, so the staging folder is removed as on Ctrl-C;
    return the handlers to put back. A signal that is ignored (nohup) stays ignored; off the main thread, no-op.
    publish() holds a signal until the new model is wholly in out, and the staging folder gone."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum, frame):
        for s in TERMINATION_SIGNALS:  # a second signal must not interrupt the clean-up
            signal.signal(s, signal.SIG_IGN)
        name = signal.Signals(signum).name
        if staging.exists():
            print(f"stopped by signal {name}; --out {out} is left as it was", file=sys.stderr)
        else:
            print(f"stopped by signal {name} after the new model was published in --out {out}", file=sys.stderr)
        raise SystemExit(128 + signum)

    previous = {}
    for s in TERMINATION_SIGNALS:
        old = signal.getsignal(s)
        if old is not signal.SIG_IGN:
            previous[s] = signal.SIG_DFL if old is None else old  # None: set outside Python
            signal.signal(s, stop)
    return previous


@dataclass
class FitRun:
    """What main() has checked and set up before training; finish() trains and publishes from it."""

    args: argparse.Namespace  # args.out is the staging folder while the run lasts
    argv: list[str]
    out: Path  # the --out folder the model is published into
    ds: Dataset
    train_idx: list[int]
    valid_idx: list[int]
    device: torch.device
    mixed: bool  # mixed precision
    class_info: dict
    trainer: Callable  # recipe_fast.train_fast or recipe_original.train_original
    t0: float  # time.time() at the start

    def training_record(self) -> dict:
        """How the model was trained, for config.json's "training"."""
        args = self.args
        return {
            "recipe": args.recipe,
            "command": "python -m train.fit " + " ".join(shlex.quote(a) for a in self.argv),
            "device": str(self.device),
            "mixed_precision": self.mixed,
            "seed": args.seed,
            "n_train": len(self.train_idx),
            "n_valid": len(self.valid_idx),
            "data_dir_name": Path(args.data_dir).resolve().name,
            **({"data_source": args.data_source} if args.data_source else {}),
        }

    def output_extras(self, feats: dict) -> dict:
        """write_outputs()'s `extra`: the run's facts plus what the recipe returned besides the model."""
        args = self.args
        extra = {
            "n_train": len(self.train_idx),
            "train_seconds": time.time() - self.t0,
            "max_false_abstain": args.max_false_abstain,
        }
        extra.update(feats)
        extra["train_paths"] = [self.ds.paths[i] for i in self.train_idx]
        extra["quiet"] = args.quiet
        extra["photo_previews"] = not args.no_photo_previews
        extra["data_dir"] = args.data_dir
        extra["background"] = args.background
        return extra


def finish(run: FitRun) -> int:
    """Train into the staging folder run.args.out, write the outputs, then publish them into run.out."""
    try:
        model, spec, logits, feats = run.trainer(run.ds, run.train_idx, run.valid_idx, run.args, run.device)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    spec.class_info = {k: v for k, v in run.class_info.items() if k in spec.labels}
    spec.training.update(run.training_record())
    m = write_outputs(model, spec, run.ds, run.valid_idx, logits, run.args.out, run.output_extras(feats))
    publish(run.args.out, run.out)
    print(
        f"valid error {m['valid_error']:.1%} | ECE {m['ece_before']:.3f} -> {m['ece_after']:.3f} "
        f"(T={m['temperature']:.2f}; a perfectly calibrated model would show {m['ece_noise_floor']:.3f} on this "
        f"many images) | {time.time() - run.t0:.0f} s | artifact in {run.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
