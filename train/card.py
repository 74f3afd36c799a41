"""The model card (README.md) of an artifact, built from its config.json, metrics.json and data manifest."""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from collections import Counter
from collections.abc import Iterable
from pathlib import Path, PurePosixPath, PureWindowsPath

import yaml

from snake_model.artifact import CONFIG, read_json_object
from snake_model.mdtext import md_code, md_text
from snake_model.spec import ModelSpec, split_arch

from .data import BACKGROUND_LABEL, SKIP_DIRS, class_dirs, image_files
from .metrics import macro_f1

CARD_IMAGES = {
    "confusion_matrix.png": "Confusion matrix",
    "top_losses.png": "Top losses (predicted / actual)",
    "reliability.png": "Reliability diagram (confidence against accuracy, before and after calibration)",
}
MANIFEST = "manifest.csv"
DEFAULT_ENDPOINT = "https://huggingface.co"  # huggingface_hub's default Hub
ATTRIBUTION = "ATTRIBUTION.md"
SAFETY = (
    "**Not for snakebite or medical decisions.** This model is often wrong, and a wrong answer about a snake "
    "can kill. If someone is bitten, call emergency services; never handle a snake because of this model."
)


def _num(x, fmt: str = ".3f") -> str:
    return format(x, fmt) if isinstance(x, int | float) else "n/a"


def find_manifest(artifact_dir: Path, data_dir: str | Path | None) -> Path | None:
    """manifest.csv from gather: in data_dir (train.fit passes its DATA_DIR, push its --data) or the artifact folder."""
    for d in (data_dir, artifact_dir):
        if d and (Path(d) / MANIFEST).is_file():
            return Path(d) / MANIFEST
    return None


PHOTO_MONTAGES = ("top_losses.png", "batch_preview.png")  # pictures made of training photos
# Errors a manifest.csv with bad content can raise while it is read (csv.Error: a field over the size limit, ...).
MANIFEST_ERRORS = (OSError, UnicodeError, csv.Error, ValueError, TypeError, MemoryError)


class ManifestRows(list):
    """The rows of a gather manifest (dicts of str); .note says what was wrong with the file, if anything."""

    note: str | None = None


def read_manifest_rows(manifest: Path) -> ManifestRows:
    """Every row of manifest.csv as {column: text}, whatever its encoding: a file that is not UTF-8 (a spreadsheet's
    cp1252) is read with the undecodable bytes replaced, and .note says so. Raises only MANIFEST_ERRORS."""
    data = Path(manifest).read_bytes()
    out = ManifestRows()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("utf-8", errors="replace")
        out.note = (
            f"{MANIFEST} is not UTF-8 text (saved by a spreadsheet?): characters it could not decode are shown as "
            "\ufffd; save it as UTF-8 to fix the names."
        )
    for r in csv.DictReader(io.StringIO(text, newline="")):
        out.append({k: v for k, v in r.items() if isinstance(k, str) and isinstance(v, str)})
    return out


def _cell(row: dict, *names: str) -> str:
    return next((row[n].strip() for n in names if (row.get(n) or "").strip()), "")


# How metrics.json's train_paths / valid_paths may name a --background decoy (a photo outside the data folder),
# besides an absolute path: this prefix and the path inside the --background folder.
BACKGROUND_PREFIX = "--background/"


def _is_external(path: str) -> bool:
    """A recorded photo path that is not relative to the data folder (a --background decoy): no manifest row."""
    pure = PurePosixPath(path)
    return (
        path.startswith(BACKGROUND_PREFIX)
        or pure.is_absolute()
        or PureWindowsPath(path).is_absolute()
        or ".." in pure.parts
    )


def publishable_paths(rows: Iterable[dict]) -> set[str]:
    """The manifest paths whose every row says use=publishable."""
    use: dict[str, bool] = {}
    for r in rows:
        p = r.get("path")
        if p:
            use[p] = use.get(p, True) and _cell(r, "use") == "publishable"
    return {p for p, ok in use.items() if ok}


def recorded_photos(metrics: dict, key: str, count_key: str) -> list[str] | None:
    """metrics.json's list of photo paths under key (train.fit's 'train_paths' / 'valid_paths': relative to the data
    folder, absolute for --background decoys), or None when it is missing, malformed or disagrees with count_key."""
    paths = metrics.get(key)
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        return None
    n = metrics.get(count_key)
    if isinstance(n, int) and not isinstance(n, bool) and n != len(paths):
        return None
    return paths


def publishable_montages(artifact_dir: Path, data_dir: str | Path | None) -> set[str]:
    """The photo montages that may be published: those whose every photo the gather manifest marks publishable.

    top_losses.png shows the first 9 of metrics.json's top losses; batch_preview.png shows any training photos, so
    it needs metrics.json's train_paths (every training photo, --background decoys included) and a publishable
    manifest row for each one. Whatever is unknown (no manifest, no train_paths, a photo without a row, an unreadable
    manifest) counts as not publishable.
    """
    artifact_dir = Path(artifact_dir)
    try:
        manifest = find_manifest(artifact_dir, data_dir)
        if manifest is None:
            return set()
        ok_paths = publishable_paths(read_manifest_rows(manifest))
    except MANIFEST_ERRORS:
        return set()
    metrics = read_json_object(artifact_dir / "metrics.json")
    labels = [read_json_object(artifact_dir / CONFIG).get("labels"), metrics.get("labels")]
    decoys = any(isinstance(ls, list) and BACKGROUND_LABEL in ls for ls in labels)
    ok = set()
    train = recorded_photos(metrics, "train_paths", "n_train")
    # the decoys of --background come from a folder of their own, which this manifest does not describe
    if train and not decoys and all(p in ok_paths for p in train):
        ok.add("batch_preview.png")
    top = metrics.get("top_losses")
    shown = list(top if isinstance(top, list) else [])[:9]
    if shown and all(
        isinstance(t, dict)
        and isinstance(t.get("path"), str)
        and t.get("actual") != BACKGROUND_LABEL
        and t["path"] in ok_paths
        for t in shown
    ):
        ok.add("top_losses.png")
    return ok


def licence_breakdown(manifest: Path | Iterable[dict], only: set[str] | None = None) -> dict[str, Counter]:
    """Counts of images per licence, overall and per source, from a gather manifest (a path or its rows).

    only: count just the rows whose path is in it (the photos the model was built from), each path once.
    """
    rows = read_manifest_rows(manifest) if isinstance(manifest, str | Path) else manifest
    out: dict[str, Counter] = {"all": Counter()}
    seen: set[str] = set()
    for row in rows:
        path = row.get("path") or ""
        if only is not None and (path not in only or path in seen):
            continue
        seen.add(path)
        lic = _cell(row, "licence", "license") or "unknown"
        src = _cell(row, "source") or "unknown"
        out["all"][lic] += 1
        out.setdefault(src, Counter())[lic] += 1
        if _cell(row, "use"):
            out.setdefault("use", Counter())[_cell(row, "use")] += 1
    return out


def _front_matter(spec: ModelSpec, metrics: dict, name: str, data_name: str) -> str:
    meta: dict = {
        "library_name": "pytorch",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "safetensors", "timm", "fastai", "snakes", spec.arch],
        "metrics": ["accuracy"],
    }
    err = metrics.get("valid_error")
    if isinstance(err, int | float):
        results = [{"type": "accuracy", "value": round(1 - err, 4), "name": "Validation accuracy"}]
        # macro F1 over the classes that have validation images (F1 null, undefined, for the others); none at all
        # when metrics.json holds something else than numbers there
        per = metrics.get("per_class", {})
        f1s = [v.get("f1") for v in per.values() if isinstance(v, dict)]
        macro = macro_f1(per) if all(f is None or isinstance(f, int | float) for f in f1s) else None
        if macro is not None:
            results.append({"type": "f1", "value": round(macro, 4), "name": "Validation macro F1"})
        meta["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Image Classification"},
                        "dataset": {"name": data_name, "type": data_name.replace(" ", "-"), "split": "validation"},
                        "metrics": results,
                    }
                ],
            }
        ]
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def md_cell(text: object, code: bool = False) -> str:
    """Untrusted text in a Markdown table cell: md_text (or md_code) with its pipes escaped, so a name with `|` in it
    never splits the cell (GFM reads `\\|` as a literal pipe, in code spans too)."""
    return md_code(text).replace("|", "\\|") if code else md_text(text)


def _classes_table(spec: ModelSpec, metrics: dict) -> str:
    per = metrics.get("per_class")
    per = per if isinstance(per, dict) else {}
    rows = ["| label | name | scientific name | venomous | precision | recall | F1 | support |", "|---" * 8 + "|"]
    for lab in spec.labels:
        info, m = spec.class_info.get(lab) or {}, per.get(lab)
        m = m if isinstance(m, dict) else {}
        ven = info.get("venomous")
        sci = info.get("scientific_name")
        rows.append(
            f"| {md_cell(lab, code=True)} | {md_cell(info.get('display_name') or lab.replace('_', ' '))} | "
            f"{'*' + md_cell(str(sci).strip()) + '*' if str(sci or '').strip() else 'n/a'} | "
            f"{'yes' if ven is True else 'no' if ven is False else 'n/a'} | {_num(m.get('precision'))} | "
            f"{_num(m.get('recall'))} | {_num(m.get('f1'))} | {md_cell(m.get('support', 'n/a'))} |"
        )
    return "\n".join(rows)


def _in_class_folder(path: str) -> bool:
    top = path.split("/", 1)[0] if "/" in path else ""
    return bool(top) and top not in SKIP_DIRS and not top.startswith(".")


def _recorded_used(metrics: dict) -> list[str] | None:
    """metrics.json's train_paths + valid_paths (each photo once), or None unless both are recorded."""
    train = recorded_photos(metrics, "train_paths", "n_train")
    valid = recorded_photos(metrics, "valid_paths", "n_valid")
    return None if train is None or valid is None else list(dict.fromkeys(train + valid))


def _photos_used(artifact_dir: Path, manifest: Path, data_dir, metrics: dict) -> tuple[list[str] | None, str]:
    """The photos the model was built from, as paths relative to the data folder (absolute for --background
    decoys), and how that is known: "recorded" (metrics.json's train_paths + valid_paths), "folder" (the class
    folders of the data folder as they are now, less metrics.json's unreadable skipped_images) or "" (unknown)."""
    recorded = _recorded_used(metrics)
    if recorded is not None:
        return recorded, "recorded"
    if data_dir is not None and manifest.parent == Path(data_dir) and manifest.parent != artifact_dir:
        root = Path(data_dir)
        skipped = metrics.get("skipped_images")
        skipped = skipped if isinstance(skipped, dict) else {}
        try:
            found = [p.relative_to(root).as_posix() for d in class_dirs(root) for p in image_files(d)]
        except OSError:  # an unreadable data folder: which photos were used is unknown
            return None, ""
        return [p for p in found if p not in skipped], "folder"
    return None, ""


def _no_record_line(missing: list[str]) -> str:
    """How many photos the model saw have no manifest row, by folder."""
    by = Counter("--background decoys" if _is_external(p) else md_code(p.split("/", 1)[0]) for p in missing)
    why = "copied in by hand" + (", decoys of --background" if "--background decoys" in by else "") + " or moved since"
    return (
        f"**{len(missing)} of these photos have no licence record** (no row in the gather manifest: {why}), so their "
        "source and licence are unknown; treat them as not redistributable. By folder: "
        + ", ".join(f"{k} {n}" for k, n in by.most_common())
        + "."
    )


def _manifest_lines(artifact_dir: Path, manifest: Path, data_dir, metrics: dict) -> list[str]:
    """The licence breakdown of the photos the model was built from that have a manifest row, and how many have
    none. Raises MANIFEST_ERRORS on a manifest it cannot read."""
    rows = read_manifest_rows(manifest)
    used, how = _photos_used(artifact_dir, manifest, data_dir, metrics)
    lines = []
    if used is None:
        counts = licence_breakdown(rows, {r["path"] for r in rows if _in_class_folder(r.get("path") or "")})
        n = sum(counts["all"].values())
        lines += [
            f"{n} images in class folders, from the gather manifest (metrics.json does not list the photos the model "
            "was trained on, and no data folder could be listed, so this is every row of the manifest outside "
            "`_trash`, `_not_snake` and `_quarantine`)."
        ]
        missing: list[str] = []
    else:
        counts = licence_breakdown(rows, set(used))
        n = sum(counts["all"].values())
        have = {r.get("path") for r in rows}
        missing = [p for p in used if p not in have]
        lines += [
            f"The model was trained and validated on {len(used)} photos; {n} of them have a row in the gather manifest."
            if how == "recorded"
            else f"The class folders of the data folder hold {len(used)} photos; {n} of them have a row in the gather "
            "manifest (counted from the folder as it is now: metrics.json does not list the photos the model was "
            "trained on)."
        ]
    if n:
        lines += ["", "Licence breakdown:", "", "| source | licence | images |", "|---|---|---|"]
        for src in sorted(k for k in counts if k not in ("all", "use")):
            for lic, k in counts[src].most_common():
                lines.append(f"| {md_cell(src)} | {md_cell(lic)} | {k} |")
        lines += [
            "",
            "All sources: " + ", ".join(f"{md_text(lic)} {k}" for lic, k in counts["all"].most_common()) + ".",
        ]
        if "use" in counts:
            use = ", ".join(f"{md_text(u)} {k}" for u, k in counts["use"].most_common())
            lines += ["", f"Use under the licence policy: {use}."]
    if missing:
        lines += ["", _no_record_line(missing)]
    if rows.note:
        lines += ["", f"Note: {md_text(rows.note)}"]
    return lines


def _data_section(artifact_dir: Path, spec: ModelSpec, data_dir, metrics: dict | None = None) -> str:
    lines = ["## Data and licences", ""]
    if spec.training.get("data_dir_name"):
        lines += [f"Trained on the image folder {md_code(spec.training['data_dir_name'])}.", ""]
    if spec.training.get("data_source"):
        lines += [str(spec.training["data_source"]), ""]
    metrics = read_json_object(artifact_dir / "metrics.json") if metrics is None else metrics
    manifest = find_manifest(artifact_dir, data_dir)
    if manifest is None:
        lines += [
            "Sources and licences: **unknown**. No gather manifest was found for this model, so the origin and "
            "licence of the training photos are not recorded; treat them as not redistributable.",
        ]
    else:
        if BACKGROUND_LABEL in spec.labels and _recorded_used(metrics) is None:
            lines += [
                f"The {md_code(BACKGROUND_LABEL)} decoy photos (train.fit --background) come from a folder of their "
                "own: they are not counted below and their sources and licences are not recorded.",
                "",
            ]
        try:
            lines += _manifest_lines(artifact_dir, manifest, data_dir, metrics)
        except MANIFEST_ERRORS as e:  # a card is still written (train.fit must not lose a trained model over it)
            why = getattr(e, "strerror", None) or str(e)
            lines += [
                f"Sources and licences: **unknown**. The gather manifest could not be read "
                f"({md_text(type(e).__name__)}: {md_text(why[:200])}), so the origin and licence of the training "
                "photos are not known; treat them as not redistributable.",
            ]
    if (artifact_dir / ATTRIBUTION).is_file() or (data_dir and (Path(data_dir) / ATTRIBUTION).is_file()):
        lines += ["", f"Per-image credits (author, licence, page) are in [{ATTRIBUTION}]({ATTRIBUTION})."]
    return "\n".join(lines)


def _views(spec: ModelSpec) -> str:
    if not spec.tta_flip:
        return "1 (the photo)"
    if spec.tta_zoom >= 1:
        return "2, answers averaged: the photo and its mirror image"
    return (
        f"2, answers averaged: the photo and the mirror image of its central {spec.tta_zoom:.0%}, zoomed to full size"
    )


def _training_section(spec: ModelSpec, metrics: dict) -> str:
    rows = [
        (
            "arch",
            f"`{spec.arch}` (head `{spec.head}`)"
            + (", features side by side" if len(split_arch(spec.arch)) > 1 else ""),
        ),
        (
            "served as",
            f"int8 ONNX graph of the bodies ({md_cell(spec.int8.get('file', ''), code=True)}) + float32 head"
            if spec.int8
            else "float32 network (ONNX Runtime)",
        ),
        ("image size", f"{spec.image_size} px, resize `{spec.resize_method}`"),
        ("normalisation", f"mean {list(spec.mean)}, std {list(spec.std)}"),
        ("views per photo", _views(spec)),
        ("temperature", _num(spec.temperature)),
        ("abstain threshold", _num(spec.abstain_threshold) + f" ({spec.abstain_score})"),
    ]
    rows += [
        (md_cell(k), md_cell(v, code=True))
        for k, v in sorted(spec.training.items())
        if k not in ("command", "data_source") and not isinstance(v, dict | list)
    ]
    for key in ("n_train", "n_valid", "train_seconds"):
        if key in metrics and key not in spec.training:
            rows.append((key, _num(metrics[key], ".0f") if key == "train_seconds" else str(metrics[key])))
    rows.append(("versions", ", ".join(md_cell(f"{k} {v}") for k, v in sorted(spec.versions.items())) or "n/a"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    command = spec.training.get("command")
    fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", str(command or ""))), default=0))
    repro = (
        f"{fence}bash\n{command}\n{fence}"
        if command
        else "The command is not recorded in config.json (`training.command`); see the project README."
    )
    return f"## Training\n\n| setting | value |\n|---|---|\n{table}\n\n### Reproduce\n\n{repro}"


def _fit_on(metrics: dict) -> str:
    """Where the temperature was fitted, from metrics.json's temperature_fit_on (older artifacts lack it)."""
    f = metrics.get("temperature_fit_on")
    if isinstance(f, dict) and f.get("out_of_fold_train"):
        return (
            f"the {f.get('valid', 'n/a')} validation images plus out-of-fold predictions on the "
            f"{f['out_of_fold_train']} training images"
        )
    return "the validation split"


def species(spec: ModelSpec) -> list[str]:
    """The model's labels less the decoy class of train.fit --background: the snakes it knows."""
    return [lab for lab in spec.labels if lab != BACKGROUND_LABEL]


def _calibration_section(spec: ModelSpec, metrics: dict) -> str:
    """Calibration and abstain numbers from metrics.json, with what they mean."""
    if not isinstance(metrics.get("ece_after"), int | float):
        return ""
    n = metrics.get("n_valid", "n/a")
    lines = [
        '## Confidence and "not one of my snakes"',
        "",
        f"- Confidences are temperature-scaled (T = {_num(spec.temperature)}, fitted on {_fit_on(metrics)}). "
        f"Expected calibration error on the {n} validation images: {metrics.get('ece_before', float('nan')):.1%} before, "
        f"{metrics['ece_after']:.1%} after.",
    ]
    floor = metrics.get("ece_noise_floor")
    if isinstance(floor, int | float):
        lines.append(
            f"- On {n} images even a perfectly calibrated model would show an ECE of about {floor:.1%} "
            "(sampling noise), so differences below that are not evidence either way."
        )
    if spec.abstain_threshold is not None:
        score = (
            "distance from the photo's features to its nearest training photos (kNN)"
            if spec.abstain_score == "knn"
            else "1 - the top probability"
        )
        rate = metrics.get("valid_abstain_rate")
        lines.append(
            f'- The model abstains ("this doesn\'t look like any of the {len(species(spec))} snakes I know") when the '
            f"{score} is above {_num(spec.abstain_threshold)}"
            + (f"; that happened on {rate:.1%} of the validation snakes." if isinstance(rate, int | float) else ".")
        )
    return "\n".join(lines)


def build_card(
    artifact_dir: str | Path,
    repo_id: str | None = None,
    data_dir: str | Path | None = None,
    for_upload: bool = False,
    endpoint: str | None = None,
) -> str:
    """README.md for an artifact folder; needs config.json, uses metrics.json, pictures and a manifest if present.

    for_upload: link a photo montage only when `publishable_montages` allows it (train.push uploads only those).
    endpoint: the Hub the model is pushed to; other than huggingface.co, the Use section names it (pull_model's
    endpoint=, the app's HF_ENDPOINT).
    """
    artifact_dir = Path(artifact_dir)
    allowed = publishable_montages(artifact_dir, data_dir) if for_upload else set(PHOTO_MONTAGES)
    spec = ModelSpec.load(artifact_dir / CONFIG)
    metrics = read_json_object(artifact_dir / "metrics.json")
    name = repo_id.split("/")[-1] if repo_id else "snake-classifier"
    data_name = str(spec.training.get("data_dir_name") or "validation split")
    names = ", ".join(md_text(spec.display_name(lab)) for lab in species(spec))
    if BACKGROUND_LABEL in spec.labels:
        names += f", and `{BACKGROUND_LABEL}` for photos of anything else (decoys it was trained on)"
    err = metrics.get("valid_error")
    summary = (
        f"Validation error **{err:.1%}** (accuracy {1 - err:.1%}) on {metrics.get('n_valid', 'n/a')} held-out images."
        if isinstance(err, int | float)
        else "No validation metrics were recorded (metrics.json is missing)."
    )
    repo = repo_id or "OWNER/NAME"
    hub = endpoint.rstrip("/") if endpoint and endpoint.rstrip("/") != DEFAULT_ENDPOINT else None
    parts = [
        _front_matter(spec, metrics, name, data_name),
        f"# {md_text(name)}: an image classifier of {len(species(spec))} snake species\n\n{names}.\n\n> {SAFETY}",
        f"{summary} Weights are `model.safetensors` (no pickle); `config.json` carries the labels, the "
        "preprocessing and the sha256 of the weights.",
        "## Classes\n\n" + _classes_table(spec, metrics),
    ]
    pics = [
        f"![{alt}]({f})"
        for f, alt in CARD_IMAGES.items()
        if (artifact_dir / f).is_file() and (f not in PHOTO_MONTAGES or f in allowed)
    ]
    if pics:
        parts.append("## Validation pictures\n\n" + "\n\n".join(pics))
    parts += [
        "## Use\n\n```python\nfrom snake_model.hub import pull_model\nfrom snake_model.predictor import Predictor\n\n"
        f'model_dir = pull_model("{repo}", revision="<commit sha>"'
        + (f", endpoint={json.dumps(hub)}" if hub else "")
        + ")  # pin a commit\n"
        "probs = Predictor(model_dir).predict_proba([image])  # PIL images -> one row per image\n```\n\n"
        f"In the app: `{f'HF_ENDPOINT={shlex.quote(hub)} ' if hub else ''}MODEL_REPO={repo} "
        "MODEL_REVISION=<commit sha> python app.py`.",
        "## Intended use\n\nIdentifying photos of these species for curiosity and learning, as a demo of a "
        "reproducible image-classification pipeline. It knows only the classes above: any other snake (or "
        "anything else) is forced into one of them unless the abstain threshold catches it.",
        "## Limitations\n\n"
        "- Trained on a small set of web or citizen-science photos; errors are common, most between similar-looking "
        "species (see the confusion matrix).\n"
        "- Validation images come from the same sources as the training images, so the error on your photos will be "
        "higher.\n"
        "- Juveniles, colour morphs, partial views, night or captive shots may be under-represented.\n"
        f"- {SAFETY}",
        _calibration_section(spec, metrics),
        _training_section(spec, metrics),
        _data_section(artifact_dir, spec, data_dir, metrics),
    ]
    parts = [p for p in parts if p]
    return "\n\n".join(p.rstrip() for p in parts) + "\n"
