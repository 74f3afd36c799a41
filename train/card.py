"""The model card (README.md) of an artifact, built from its config.json, metrics.json and data manifest."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import yaml

from snake_model.artifact import CONFIG, read_json_object
from snake_model.spec import ModelSpec

from .data import BACKGROUND_LABEL
from .metrics import macro_f1

CARD_IMAGES = {
    "confusion_matrix.png": "Confusion matrix",
    "top_losses.png": "Top losses (predicted / actual)",
    "reliability.png": "Reliability diagram (confidence against accuracy, before and after calibration)",
}
MANIFEST = "manifest.csv"
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


def publishable_montages(artifact_dir: Path, data_dir: str | Path | None) -> set[str]:
    """The photo montages that may be published: those whose every photo the gather manifest marks publishable.

    top_losses.png shows the first 9 of metrics.json's top losses; batch_preview.png shows any training photos, so
    it needs every photo in the manifest to be publishable. Without a manifest, none.
    """
    manifest = find_manifest(artifact_dir, data_dir)
    if manifest is None:
        return set()
    with open(manifest, newline="", encoding="utf-8", errors="replace") as f:
        use = {r.get("path"): (r.get("use") or "").strip() for r in csv.DictReader(f)}
    ok = set()
    if use and all(u == "publishable" for u in use.values()):
        ok.add("batch_preview.png")
    top = read_json_object(artifact_dir / "metrics.json").get("top_losses")
    paths = [t.get("path") for t in (top if isinstance(top, list) else [])[:9] if isinstance(t, dict)]
    if paths and all(use.get(p) == "publishable" for p in paths):
        ok.add("top_losses.png")
    return ok


def licence_breakdown(manifest: Path) -> dict[str, Counter]:
    """Counts of images per licence, overall and per source, from a gather manifest."""
    out: dict[str, Counter] = {"all": Counter()}
    with open(manifest, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            lic = (row.get("licence") or row.get("license") or "").strip() or "unknown"
            src = (row.get("source") or "").strip() or "unknown"
            out["all"][lic] += 1
            out.setdefault(src, Counter())[lic] += 1
            if row.get("use"):
                out.setdefault("use", Counter())[row["use"].strip()] += 1
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


def _classes_table(spec: ModelSpec, metrics: dict) -> str:
    per = metrics.get("per_class", {})
    rows = ["| label | name | scientific name | venomous | precision | recall | F1 | support |", "|---" * 8 + "|"]
    for lab in spec.labels:
        info, m = spec.class_info.get(lab, {}), per.get(lab, {})
        ven = info.get("venomous")
        rows.append(
            f"| `{lab}` | {info.get('display_name') or lab.replace('_', ' ')} | "
            f"{'*' + info['scientific_name'] + '*' if info.get('scientific_name') else 'n/a'} | "
            f"{'yes' if ven is True else 'no' if ven is False else 'n/a'} | {_num(m.get('precision'))} | "
            f"{_num(m.get('recall'))} | {_num(m.get('f1'))} | {m.get('support', 'n/a')} |"
        )
    return "\n".join(rows)


def _data_section(artifact_dir: Path, spec: ModelSpec, data_dir) -> str:
    lines = ["## Data and licences", ""]
    if spec.training.get("data_dir_name"):
        lines += [f"Trained on the image folder `{spec.training['data_dir_name']}`.", ""]
    if spec.training.get("data_source"):
        lines += [spec.training["data_source"], ""]
    manifest = find_manifest(artifact_dir, data_dir)
    if manifest is None:
        lines += [
            "Sources and licences: **unknown**. No gather manifest was found for this model, so the origin and "
            "licence of the training photos are not recorded; treat them as not redistributable.",
        ]
    else:
        counts = licence_breakdown(manifest)
        total = sum(counts["all"].values())
        lines += [f"{total} images, from the gather manifest. Licence breakdown:", ""]
        lines += ["| source | licence | images |", "|---|---|---|"]
        for src in sorted(k for k in counts if k not in ("all", "use")):
            for lic, n in counts[src].most_common():
                lines.append(f"| {src} | {lic} | {n} |")
        lines += ["", "All sources: " + ", ".join(f"{lic} {n}" for lic, n in counts["all"].most_common()) + "."]
        if "use" in counts:
            lines += [
                "",
                "Use under the licence policy: " + ", ".join(f"{u} {n}" for u, n in counts["use"].most_common()) + ".",
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
        ("arch", f"`{spec.arch}` (head `{spec.head}`)"),
        ("image size", f"{spec.image_size} px, resize `{spec.resize_method}`"),
        ("normalisation", f"mean {list(spec.mean)}, std {list(spec.std)}"),
        ("views per photo", _views(spec)),
        ("temperature", _num(spec.temperature)),
        ("abstain threshold", _num(spec.abstain_threshold) + f" ({spec.abstain_score})"),
    ]
    rows += [
        (k, f"`{v}`")
        for k, v in sorted(spec.training.items())
        if k not in ("command", "data_source") and not isinstance(v, dict | list)
    ]
    for key in ("n_train", "n_valid", "train_seconds"):
        if key in metrics and key not in spec.training:
            rows.append((key, _num(metrics[key], ".0f") if key == "train_seconds" else str(metrics[key])))
    rows.append(("versions", ", ".join(f"{k} {v}" for k, v in sorted(spec.versions.items())) or "n/a"))
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    command = spec.training.get("command")
    repro = (
        f"```bash\n{command}\n```"
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
    artifact_dir: str | Path, repo_id: str | None = None, data_dir: str | Path | None = None, for_upload: bool = False
) -> str:
    """README.md for an artifact folder; needs config.json, uses metrics.json, pictures and a manifest if present.

    for_upload: link a photo montage only when `publishable_montages` allows it (train.push uploads only those).
    """
    artifact_dir = Path(artifact_dir)
    allowed = publishable_montages(artifact_dir, data_dir) if for_upload else set(PHOTO_MONTAGES)
    spec = ModelSpec.load(artifact_dir / CONFIG)
    metrics = read_json_object(artifact_dir / "metrics.json")
    name = repo_id.split("/")[-1] if repo_id else "snake-classifier"
    data_name = str(spec.training.get("data_dir_name") or "validation split")
    names = ", ".join(spec.display_name(lab) for lab in species(spec))
    if BACKGROUND_LABEL in spec.labels:
        names += f", and `{BACKGROUND_LABEL}` for photos of anything else (decoys it was trained on)"
    err = metrics.get("valid_error")
    summary = (
        f"Validation error **{err:.1%}** (accuracy {1 - err:.1%}) on {metrics.get('n_valid', 'n/a')} held-out images."
        if isinstance(err, int | float)
        else "No validation metrics were recorded (metrics.json is missing)."
    )
    repo = repo_id or "OWNER/NAME"
    parts = [
        _front_matter(spec, metrics, name, data_name),
        f"# {name}: an image classifier of {len(species(spec))} snake species\n\n{names}.\n\n> {SAFETY}",
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
        f'model_dir = pull_model("{repo}", revision="<commit sha>")  # pin a commit\n'
        "probs = Predictor(model_dir).predict_proba([image])  # PIL images -> one row per image\n```\n\n"
        f"In the app: `MODEL_REPO={repo} MODEL_REVISION=<commit sha> python app.py`.",
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
        _data_section(artifact_dir, spec, data_dir),
    ]
    parts = [p for p in parts if p]
    return "\n\n".join(p.rstrip() for p in parts) + "\n"
