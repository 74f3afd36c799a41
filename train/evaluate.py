"""python -m train.evaluate ARTIFACT_DIR DATA_DIR: error, per-class P/R/F1, confusion, ECE, abstain, OOD AUROC.

Writes report.md, report.html (images embedded), report.json, confusion_matrix.png and reliability.png.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from snake_model.artifact import ArtifactError, load_spec
from snake_model.loader import ImageLoadError
from snake_model.mdtext import md_code, md_text
from snake_model.predictor import Predictor
from snake_model.text import error_line
from snake_model.text import utf8_safe as shown

from . import metrics as M
from . import plots
from .cli import FRACTION, DefaultsHelpFormatter, int_at_least
from .data import IMAGE_SUFFIXES, Dataset, DatasetError, class_dirs, image_files, list_images, random_split, read_splits

BATCH = 32


class EvalError(ValueError):
    """Bad input for evaluate; the message says how to fix it (exit code 2)."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train.evaluate",
        description="Evaluate a model artifact on a folder of labelled photos (one sub-folder per class, "
        "folder names = the model's labels). Reports error, per-class precision/recall/F1, a confusion matrix, "
        "ECE and a reliability diagram (calibrated and uncalibrated), the abstain rate and, with --ood, the "
        "AUROC of the out-of-distribution score on photos of non-classes.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("artifact_dir", type=Path, help="model directory with model.safetensors + config.json")
    p.add_argument("data_dir", type=Path, help="folder with one sub-folder of labelled images per class")
    p.add_argument("--out", type=Path, default=None, help="report folder (default: ARTIFACT_DIR/eval-<DATA_DIR name>)")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FOLDER=LABEL",
        help="treat sub-folder FOLDER as the model label LABEL (repeatable)",
    )
    p.add_argument(
        "--skip-unknown",
        action="store_true",
        help="skip sub-folders that are not model labels (with a warning) instead of stopping",
    )
    p.add_argument(
        "--split",
        choices=("all", "valid", "train"),
        default="all",
        help="which images to use: all, or the training run's valid/train split: the photos the run's metrics.json "
        "records (train_paths/valid_paths, those still in DATA_DIR), else DATA_DIR/splits.csv, else re-drawn with "
        "the artifact's seed and --valid-pct, as train.fit does. A warning counts any evaluated photo the model "
        "trained on",
    )
    p.add_argument("--valid-pct", type=FRACTION, default=0.2, help="validation share used by train.fit (with --split)")
    p.add_argument("--ood", type=Path, default=None, help="folder of photos of none of the classes (any layout)")
    p.add_argument("--batch-size", type=int_at_least(1), default=BATCH, help="images per predictor call")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def parse_map(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items:
        folder, sep, label = item.partition("=")
        if not sep or not folder or not label:
            raise EvalError(f"--map {item!r}: expected FOLDER=LABEL")
        out[folder] = label
    return out


def check_map_folders(mapping: dict[str, str], folders: Sequence[str]) -> None:
    """An EvalError when --map names a FOLDER that is not a sub-folder of DATA_DIR (a typo would be ignored)."""
    missing = sorted(k for k in mapping if k not in folders)
    if missing:
        raise EvalError(
            f"--map names folder(s) {missing} that are not sub-folders of the data folder; its sub-folders: "
            f"{list(folders)}"
        )


def without_empty_classes(ds: Dataset) -> Dataset:
    """The same images (same indices into ds.paths) with the classes that kept no readable image left out."""
    have = sorted(set(ds.labels))
    new = {ci: k for k, ci in enumerate(have)}
    return Dataset(ds.root, [ds.classes[ci] for ci in have], ds.paths, [new[y] for y in ds.labels], ds.skipped)


def match_labels(
    classes: Sequence[str], labels: Sequence[str], mapping: dict[str, str], skip_unknown: bool
) -> tuple[dict[int, int], list[str]]:
    """Folder index -> model label index; returns the folders skipped. Unknown folders are an EvalError."""
    bad_map = sorted(v for v in mapping.values() if v not in labels)
    if bad_map:
        raise EvalError(f"--map names label(s) the model does not have: {bad_map}; model labels: {list(labels)}")
    index = {lab: i for i, lab in enumerate(labels)}
    folder_to_label, unknown = {}, []
    for ci, name in enumerate(classes):
        lab = mapping.get(name, name)
        if lab in index:
            folder_to_label[ci] = index[lab]
        else:
            unknown.append(name)
    if unknown and not skip_unknown:
        raise EvalError(
            f"sub-folder(s) {unknown} of the data folder are not labels of this model.\n"
            f"  model labels: {list(labels)}\n"
            "  rename the folders, map them with --map FOLDER=LABEL, or pass --skip-unknown to leave them out"
        )
    if not folder_to_label:
        raise EvalError(f"no sub-folder matches a model label; model labels: {list(labels)}")
    return folder_to_label, unknown


METRICS = "metrics.json"
BACKGROUND_PREFIX = "--background/"  # how metrics.json names a train.fit --background decoy (train.card)


def recorded_paths(artifact_dir: Path) -> dict[str, list[str]]:
    """{"train": [...], "valid": [...]}: the photos (relative to DATA_DIR) the run's metrics.json records, for each
    list it holds; {} when there is no metrics.json (a warning when it cannot be read)."""
    f = artifact_dir / METRICS
    if not f.is_file():
        return {}
    try:
        m = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        print(f"warning: cannot read {shown(str(f))} ({e}); its train/valid photos are not used", file=sys.stderr)
        return {}
    out = {}
    for split in ("train", "valid"):
        v = m.get(f"{split}_paths") if isinstance(m, dict) else None
        if isinstance(v, list) and all(isinstance(p, str) for p in v):
            out[split] = v
    return out


def recorded_split(ds, split: str, names: Sequence[str], where: str) -> list[int]:
    """Indices of the photos of names (metrics.json's list for split) that are in ds, with a note on stderr about
    those that are not (--background decoys live outside DATA_DIR; others were deleted or moved)."""
    decoys = sum(n.startswith(BACKGROUND_PREFIX) for n in names)
    wanted = [n for n in names if not n.startswith(BACKGROUND_PREFIX)]
    index = {ds.rel(p): i for i, p in enumerate(ds.paths)}
    idx = sorted(index[n] for n in set(wanted) if n in index)
    unreadable = sum(n in ds.skipped for n in set(wanted) if n not in index)
    missing = len(set(wanted)) - len(idx) - unreadable
    print(
        f"note: --split {split} uses the {len(set(wanted))} {split} photos recorded in {shown(where)}, not a split "
        "derived again from DATA_DIR"
        + (f" ({decoys} --background decoy photo(s) are not in DATA_DIR and are left out)" if decoys else ""),
        file=sys.stderr,
    )
    if missing or unreadable:
        print(
            f"note: {missing + unreadable} of the recorded {split} photos are missing from {shown(str(ds.root))} "
            f"({missing} deleted or moved, {unreadable} unreadable); evaluating the {len(idx)} that remain",
            file=sys.stderr,
        )
    if not idx:
        raise EvalError(
            f"none of the {len(set(wanted))} {split} photos recorded in {where} is in {ds.root}; give the data folder "
            "the model was trained on, or use --split all"
        )
    return idx


def select_split(ds, split: str, spec, valid_pct: float) -> list[int]:
    """Indices of the images to evaluate: all, or train.fit's valid/train split."""
    if split == "all":
        return list(range(len(ds.paths)))
    parts = read_splits(ds)
    if parts is None:
        seed = spec.training.get("seed")
        if seed is None:
            raise EvalError("--split needs DATA_DIR/splits.csv or a seed in the artifact's config.json training")
        parts = random_split(ds, valid_pct, int(seed))
        n_valid = spec.training.get("n_valid")
        if n_valid is not None and n_valid != len(parts[1]):
            print(
                f"warning: re-drawn valid split has {len(parts[1])} images, the training run had {n_valid}; "
                "the folder or --valid-pct differs from training, so the split may overlap training images",
                file=sys.stderr,
            )
    return list(parts[1] if split == "valid" else parts[0])


def _predict_chunk(predictor, chunk: list) -> tuple[np.ndarray, list]:
    """Uncalibrated probabilities and the serving path's Predictions (calibrated, abstain) for one batch."""
    return predictor.predict_with_uncalibrated(chunk)


def predict_paths(predictor, paths: Sequence[Path], batch: int, desc: str, quiet: bool):
    """Raw and calibrated probabilities, Prediction per image, kept indices, {path: reason} for unreadable files."""
    from tqdm.auto import tqdm

    labels = list(predictor.labels)
    raw, decisions, keep, bad = [], [], [], {}
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=quiet, file=sys.stderr)
    for start in range(0, len(paths), batch):
        chunk = list(paths[start : start + batch])
        try:
            pr, preds = _predict_chunk(predictor, chunk)
            ok = list(range(len(chunk)))
        except ImageLoadError:  # a file changed since listing: find it one image at a time
            pr, preds, ok = [], [], []
            for j, p in enumerate(chunk):
                try:
                    r1, d1 = _predict_chunk(predictor, [p])
                except ImageLoadError as e:
                    bad[str(p)] = str(e)
                    continue
                pr.append(r1[0])
                preds += d1
                ok.append(j)
        raw += list(pr)
        decisions += preds
        keep += [start + j for j in ok]
        bar.update(len(chunk))
    bar.close()
    n = len(labels)
    cal = np.asarray([[d.probs[lab] for lab in labels] for d in decisions], dtype=np.float64).reshape(-1, n)
    return np.asarray(raw, dtype=np.float64).reshape(-1, n), cal, decisions, keep, bad


def calibration_block(probs: np.ndarray, y: np.ndarray) -> dict:
    """ECE, NLL and reliability bins for one set of probabilities."""
    logp = np.log(np.clip(probs, 1e-12, 1.0))  # log-probabilities are valid logits for nll
    return {
        "ece": M.ece(probs, y),
        "ece_noise_floor": M.ece_noise_floor(probs),
        "nll": M.nll(logp, y),
        "reliability": M.reliability_bins(probs, y),
    }


def list_ood(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise EvalError(f"--ood {folder} is not a directory")
    files = image_files(folder)
    if not files:
        raise EvalError(f"--ood {folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def evaluate(args: argparse.Namespace) -> dict:
    """Run the whole evaluation and return the report dict (pictures written to args.out)."""
    t0 = time.time()
    if not args.artifact_dir.is_dir():
        raise EvalError(f"artifact {args.artifact_dir} is not a directory (need model.safetensors + config.json)")
    if not args.data_dir.is_dir():
        raise EvalError(f"data folder {args.data_dir} is not a directory; give one sub-folder of images per class")
    mapping = parse_map(args.map)
    check_map_folders(mapping, [d.name for d in class_dirs(args.data_dir)])
    ood_files = list_ood(args.ood) if args.ood is not None else []
    spec = load_spec(args.artifact_dir)  # cheap: check the labels before the slow predictor start-up
    labels = list(spec.labels)
    if not args.quiet:
        print(f"listing and verifying {args.data_dir} ...", file=sys.stderr)
    # min_per_class=0: a class folder whose files are all unreadable lists them as unreadable and has support 0
    ds = list_images(args.data_dir, verify=True, min_classes=1, min_per_class=0)
    folder_to_label, unknown = match_labels(ds.classes, labels, mapping, args.skip_unknown)
    if unknown:
        print(f"warning: skipping folder(s) that are not model labels: {unknown}", file=sys.stderr)
    empty = [c for ci, c in enumerate(ds.classes) if ci in folder_to_label and ci not in set(ds.labels)]
    if empty:
        print(
            f"warning: folder(s) {empty} hold no readable image (listed as unreadable in the report)", file=sys.stderr
        )
    # The split is drawn over the classes that have images (as train.fit saw them); ds.paths indices are unchanged.
    split_ds = without_empty_classes(ds)
    recorded = recorded_paths(args.artifact_dir)
    metrics_file = str(args.artifact_dir / METRICS)
    if args.split != "all" and args.split in recorded:  # exactly the photos of the training run, re-split or not
        chosen, source = recorded_split(split_ds, args.split, recorded[args.split], metrics_file), METRICS
    else:
        chosen = select_split(split_ds, args.split, spec, args.valid_pct)
        source = "all" if args.split == "all" else "splits.csv or re-drawn"
    idx = [i for i in chosen if ds.labels[i] in folder_to_label]
    if not idx:
        raise EvalError(f"no readable labelled images to evaluate in {args.data_dir}")
    trained_on = set(recorded.get("train", ()))
    n_trained = sum(ds.rel(ds.paths[i]) in trained_on for i in idx)
    if n_trained and args.split != "train":
        print(
            f"warning: {n_trained} of the {len(idx)} photos evaluated are photos this model trained on (they are in "
            f"train_paths of {shown(metrics_file)}); on them the error is optimistic. "
            + (
                "Use --split valid to evaluate on the run's own validation photos, or a data folder it never saw"
                if args.split == "all"
                else "The folder's split changed since training: evaluate on a data folder the model never saw"
            ),
            file=sys.stderr,
        )
    unreadable = {k: v for k, v in ds.skipped.items() if Path(k).parts[0] not in unknown}
    predictor = Predictor(args.artifact_dir)
    spec = predictor.spec
    paths = [ds.paths[i] for i in idx]
    raw, cal, decisions, keep, bad = predict_paths(predictor, paths, args.batch_size, "labelled", args.quiet)
    unreadable.update({ds.rel(Path(k)): v for k, v in bad.items()})
    if not keep:
        raise EvalError(f"none of the images in {args.data_dir} could be read")
    y = np.asarray([folder_to_label[ds.labels[idx[k]]] for k in keep])

    # A class without images has no recall or F1 (None: null in report.json, n/a in report.md/html).
    summary = M.summarize(cal, y, labels, undefined=None)
    abstain = np.asarray([d.abstain for d in decisions])
    correct = cal.argmax(1) == y
    answered = ~abstain
    report = {
        "artifact": str(args.artifact_dir),
        "data_dir": str(args.data_dir),
        "split": args.split,
        "split_source": source,
        "n_training_photos": int(n_trained),  # evaluated photos that metrics.json lists in train_paths
        "labels": labels,
        "folders": {ds.classes[ci]: labels[li] for ci, li in folder_to_label.items()},
        "skipped_folders": unknown,
        "n": int(len(y)),
        "n_unreadable": len(unreadable),
        "unreadable": unreadable,
        "error": summary["error"],
        "per_class": summary["per_class"],
        "macro_f1": M.macro_f1(summary["per_class"]),  # over the classes that have images
        "confusion": summary["confusion"],
        "temperature": float(spec.temperature),
        "calibrated": calibration_block(cal, y),
        "uncalibrated": calibration_block(raw, y),
        "abstain": {
            "threshold": spec.abstain_threshold,
            "score": spec.abstain_score,
            "rate": float(abstain.mean()),
            "n": int(abstain.sum()),
            "error_when_answered": float((~correct[answered]).mean()) if answered.any() else None,
            "error_when_abstained": float((~correct[abstain]).mean()) if abstain.any() else None,
        },
        "images": {"confusion": "confusion_matrix.png", "reliability": "reliability.png"},
    }
    if ood_files:
        report["ood"] = ood_block(predictor, ood_files, decisions, args)
    report["seconds"] = round(time.time() - t0, 2)
    return report


def ood_block(predictor, files: list[Path], in_decisions, args) -> dict:
    """AUROC of the OOD score (labelled photos negative, --ood photos positive) and both abstain rates."""
    _, _, dec, keep, bad = predict_paths(predictor, files, args.batch_size, "ood", args.quiet)
    s_in = np.asarray([d.ood_score for d in in_decisions])
    s_out = np.asarray([d.ood_score for d in dec])
    return {
        "dir": str(args.ood),
        "n": len(keep),
        "n_unreadable": len(bad),
        "unreadable": {Path(k).relative_to(args.ood).as_posix(): v for k, v in bad.items()},
        "auroc": M.auroc(s_in, s_out) if len(s_out) else None,
        "abstain_rate_ood": float(np.mean([d.abstain for d in dec])) if dec else None,
        "false_abstain_rate": float(np.mean([d.abstain for d in in_decisions])),
        "answered": [  # the non-class photos the model still gave a label to, most in-distribution-looking first
            {"file": Path(files[i]).relative_to(args.ood).as_posix(), "label": d.label, "score": d.ood_score}
            for i, d in sorted(zip(keep, dec, strict=True), key=lambda t: t[1].ood_score)
            if not d.abstain
        ],
    }


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{100 * x:.1f} %"


def _num(x) -> str:
    return "none" if x is None else f"{x:.3f}"


def _f3(x) -> str:
    """A per-class metric: n/a where it is undefined (a class with no images)."""
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.3f}"


def to_markdown(r: dict, missing: Sequence[str] = ()) -> str:
    """The report as Markdown (pictures linked next to it; those named in `missing` could not be drawn)."""
    lines = [
        f"# Evaluation of {md_code(r['artifact'])} on {md_code(r['data_dir'])}",
        "",
        f"- images: **{r['n']}** (split: {r['split']}), unreadable: {r['n_unreadable']}"
        + (f", skipped folders: {', '.join(map(md_code, r['skipped_folders']))}" if r["skipped_folders"] else ""),
        f"- error: **{_pct(r['error'])}**, macro F1: {_f3(r.get('macro_f1'))}",
        *(
            [f"- **warning**: {r['n_training_photos']} of these images are photos the model trained on"]
            if r.get("n_training_photos") and r["split"] != "train"
            else []
        ),
        f"- ECE: uncalibrated {_pct(r['uncalibrated']['ece'])} → calibrated {_pct(r['calibrated']['ece'])} "
        f"(temperature {r['temperature']:.3f}); NLL {r['uncalibrated']['nll']:.3f} → {r['calibrated']['nll']:.3f}",
        f"- ECE noise floor: {_pct(r['calibrated']['ece_noise_floor'])}, the ECE a perfectly calibrated model with "
        f"these confidences would show on {r['n']} images (smaller differences are sampling noise)",
        f"- abstain rate: **{_pct(r['abstain']['rate'])}** ({r['abstain']['score']} score, threshold {_num(r['abstain']['threshold'])}); "
        f"error when answered {_pct(r['abstain']['error_when_answered'])}",
    ]
    if "ood" in r:
        o = r["ood"]
        auroc = "n/a" if o["auroc"] is None else f"{o['auroc']:.3f}"
        lines.append(
            f"- out-of-distribution ({md_code(o['dir'])}, {o['n']} photos): AUROC **{auroc}**, abstained on "
            f"{_pct(o['abstain_rate_ood'])} of them; false-abstain rate on the labelled photos "
            f"{_pct(o['false_abstain_rate'])}"
        )
    if "ood" in r and r["ood"]["answered"]:
        shown = ", ".join(
            f"{md_code(a['file'])} ({md_text(a['label'])}, {a['score']:.3f})" for a in r["ood"]["answered"][:20]
        )
        lines.append(f"- non-class photos answered anyway (label, score): {shown}")
    lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for lab, v in r["per_class"].items():
        lines.append(
            f"| {md_text(lab)} | {_f3(v['precision'])} | {_f3(v['recall'])} | {_f3(v['f1'])} | {v['support']} |"
        )
    for name, alt in (("confusion_matrix.png", "confusion matrix"), ("reliability.png", "reliability diagram")):
        lines += ["", f"({alt}: not drawn)" if name in missing else f"![{alt}]({name})"]
    lines.append("")
    if r["unreadable"]:
        lines += (
            ["## Unreadable files", ""] + [f"- {md_code(k)}: {md_text(v)}" for k, v in r["unreadable"].items()] + [""]
        )
    if "ood" in r and r["ood"]["unreadable"]:
        lines += ["## Unreadable out-of-distribution files", ""]
        lines += [f"- {md_code(k)}: {md_text(v)}" for k, v in r["ood"]["unreadable"].items()] + [""]
    return "\n".join(lines)


def to_html(r: dict, out: Path) -> str:
    """A standalone HTML page: the Markdown facts as a table, pictures embedded as data URIs."""

    def img(name: str, alt: str) -> str:
        if not (out / name).is_file():  # a picture that could not be drawn (write_report said why)
            return f"<em>({alt}: not drawn)</em>"
        data = base64.b64encode((out / name).read_bytes()).decode("ascii")
        return f'<img alt="{alt}" src="data:image/png;base64,{data}">'

    e = html.escape
    rows = "".join(
        f"<tr><td>{e(lab)}</td><td>{_f3(v['precision'])}</td><td>{_f3(v['recall'])}</td>"
        f"<td>{_f3(v['f1'])}</td><td>{v['support']}</td></tr>"
        for lab, v in r["per_class"].items()
    )
    facts = [
        ("images", f"{r['n']} (split {r['split']}), unreadable {r['n_unreadable']}"),
        ("error", _pct(r["error"])),
        ("macro F1 (classes with images)", _f3(r.get("macro_f1"))),
        ("ECE uncalibrated / calibrated", f"{_pct(r['uncalibrated']['ece'])} / {_pct(r['calibrated']['ece'])}"),
        ("temperature", f"{r['temperature']:.3f}"),
        ("ECE noise floor (perfect calibration, this many images)", _pct(r["calibrated"]["ece_noise_floor"])),
        ("abstain rate", _pct(r["abstain"]["rate"])),
    ]
    if "ood" in r:
        o = r["ood"]
        facts += [
            ("OOD AUROC", "n/a" if o["auroc"] is None else f"{o['auroc']:.3f} on {o['n']} photos"),
            ("abstained on OOD photos", _pct(o["abstain_rate_ood"])),
            ("false-abstain rate", _pct(o["false_abstain_rate"])),
        ]
    fact_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
    bad = "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in r["unreadable"].items())
    o = r.get("ood") or {}
    ood_answered = "".join(
        f"<li><code>{e(a['file'])}</code> ({e(a['label'])}, {a['score']:.3f})</li>" for a in o.get("answered", [])[:20]
    )
    ood_bad = "".join(f"<li><code>{e(k)}</code>: {e(v)}</li>" for k, v in o.get("unreadable", {}).items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Evaluation</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}td,th{padding:2px 8px;"
        "text-align:left}img{max-width:48%}</style></head><body>"
        f"<h1>Evaluation of <code>{e(r['artifact'])}</code> on <code>{e(r['data_dir'])}</code></h1>"
        f"<table>{fact_rows}</table><h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th>"
        f"<th>F1</th><th>support</th></tr>{rows}</table>"
        f"<p>{img('confusion_matrix.png', 'confusion matrix')} {img('reliability.png', 'reliability diagram')}</p>"
        + (f"<h2>Unreadable files</h2><ul>{bad}</ul>" if bad else "")
        + (f"<h2>Non-class photos answered anyway (label, score)</h2><ul>{ood_answered}</ul>" if ood_answered else "")
        + (f"<h2>Unreadable out-of-distribution files</h2><ul>{ood_bad}</ul>" if ood_bad else "")
        + "</body></html>\n"
    )


REPORT_TEXTS = ("report.json", "report.md", "report.html")


def draw_pictures(r: dict, out: Path) -> dict[str, str]:
    """confusion_matrix.png and reliability.png into out; {picture: why} for those that could not be drawn (a stale
    copy from an earlier run removed), so a plotting failure never costs the report. OSError (disk full) is raised."""
    title = shown(f"{Path(r['data_dir']).name} ({r['n']} images)")
    labels = [shown(lab) for lab in r["labels"]]
    steps = {
        r["images"]["confusion"]: lambda path: plots.confusion_png(np.asarray(r["confusion"]), labels, path, title),
        r["images"]["reliability"]: lambda path: plots.reliability_png(
            r["uncalibrated"]["reliability"], r["calibrated"]["reliability"], path
        ),
    }
    problems = {}
    for name, draw in steps.items():
        try:
            draw(out / name)
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - matplotlib can fail on odd data; the numbers matter more
            (out / name).unlink(missing_ok=True)
            problems[name] = error_line(e)
    return problems


def write_report(r: dict, out: Path) -> dict[str, str]:
    """Pictures, report.json, report.md and report.html into out; returns {picture: why} for those not drawn."""
    out.mkdir(parents=True, exist_ok=True)
    problems = draw_pictures(r, out)
    # Every text is made before any file is opened, so a report is never left half written. json.dumps escapes the
    # surrogates of names that are not UTF-8 (Python reads them back as the same name); Markdown and HTML show them.
    texts = {
        "report.json": json.dumps(r, indent=2) + "\n",
        "report.md": shown(to_markdown(r, missing=list(problems))),
        "report.html": shown(to_html(r, out)),
    }
    for name, text in texts.items():
        (out / name).write_text(text, encoding="utf-8")
    return problems


def write_numbers_only(r: dict, out: Path) -> None:
    """report.json alone, when the full report could not be made; report.md and report.html of an earlier run are
    removed, so that nothing in out contradicts the new numbers."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(r, indent=2, default=str) + "\n", encoding="utf-8")
    for name in REPORT_TEXTS[1:]:
        (out / name).unlink(missing_ok=True)


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def out_problem(args: argparse.Namespace) -> str | None:
    """Why --out cannot take the report (checked before any work), or None."""
    if _inside(args.out, args.data_dir):
        return (
            f"--out {args.out} is inside the data folder {args.data_dir}; the report's PNG pictures would be read as "
            "photos by the next run. Give a folder outside it."
        )
    if args.ood is not None and _inside(args.out, args.ood):
        return (
            f"--out {args.out} is inside the --ood folder {args.ood}; the report's PNG pictures would be read as "
            "out-of-distribution photos by the next run. Give a folder outside it."
        )
    existing = args.out.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "is a file" if existing == args.out.absolute() else f"lies under {existing}, which is a file"
        return f"--out {args.out} {what}; give a folder for the report"
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out is None:
        args.out = args.artifact_dir / f"eval-{args.data_dir.resolve().name}"
    if (args.out / "config.json").is_file() or args.out.resolve() == args.artifact_dir.resolve():
        print(
            f"error: --out {args.out} is a model folder; the report's confusion_matrix.png and reliability.png would "
            "replace the model's own. Give another folder (the default is ARTIFACT_DIR/eval-<DATA_DIR name>).",
            file=sys.stderr,
        )
        return 2
    problem = out_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        report = evaluate(args)
    except (EvalError, DatasetError, ArtifactError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rc = 0
    try:
        for name, why in write_report(report, args.out).items():
            print(f"warning: {name} could not be drawn ({why}); the report has everything else", file=sys.stderr)
    except OSError as e:
        print(f"error: cannot write the report to {args.out}: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - whatever broke the Markdown or HTML, keep the numbers computed
        why = error_line(e)
        try:
            write_numbers_only(report, args.out)
        except OSError as e2:
            print(f"error: the report could not be made ({why}) nor report.json written: {e2}", file=sys.stderr)
            return 2
        print(
            f"error: report.md and report.html could not be made ({why}); the numbers are in "
            f"{shown(str(args.out / 'report.json'))}",
            file=sys.stderr,
        )
        rc = 1
    c, u = report["calibrated"], report["uncalibrated"]
    line = (
        f"{report['n']} images: error {_pct(report['error'])} | ECE {_pct(u['ece'])} -> {_pct(c['ece'])} | "
        f"abstain {_pct(report['abstain']['rate'])}"
    )
    if "ood" in report and report["ood"]["auroc"] is not None:
        line += f" | OOD AUROC {report['ood']['auroc']:.3f} on {report['ood']['n']} photos"
    print(line + (f" | {report['n_unreadable']} unreadable" if report["n_unreadable"] else ""))
    print(f"report: {shown(str(args.out / ('report.md' if rc == 0 else 'report.json')))}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
