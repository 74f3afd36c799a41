"""The model card is built from the artifact's real numbers and says what the data and the model are."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [p for p in (str(ROOT),) if p not in sys.path]  # runnable as `pytest` or `python -m pytest`

from snake_model.artifact import CONFIG  # noqa: E402
from snake_model.spec import ModelSpec  # noqa: E402
from train.card import build_card  # noqa: E402

LABELS = ["atheris_squamigera", "python_bivittatus"]


@pytest.fixture
def artifact(tmp_path) -> Path:
    """config.json + metrics.json only: no weights needed to write a card."""
    spec = ModelSpec(
        labels=LABELS,
        class_info={
            "atheris_squamigera": {
                "display_name": "African bush viper",
                "scientific_name": "Atheris squamigera",
                "venomous": True,
            },
            "python_bivittatus": {"display_name": "Burmese python", "scientific_name": "Python bivittatus"},
        },
        training={"command": "python -m train.fit data/in4 --out runs/in4 --epochs 3", "seed": 7, "recipe": "fast"},
        weights_sha256="0" * 64,
    )
    spec.save(tmp_path / CONFIG)
    metrics = {
        "valid_error": 0.125,
        "n_valid": 40,
        "labels": LABELS,
        "per_class": {
            "atheris_squamigera": {"precision": 0.9, "recall": 0.85, "f1": 0.874, "support": 20},
            "python_bivittatus": {"precision": 0.86, "recall": 0.9, "f1": 0.88, "support": 20},
        },
        "confusion": [[17, 3], [2, 18]],
    }
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    return tmp_path


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_the_card_carries_hub_metadata_with_the_validation_accuracy(artifact):
    meta = front_matter(build_card(artifact, "alice/snakes"))
    assert meta["pipeline_tag"] == "image-classification"
    assert meta["library_name"] and "image-classification" in meta["tags"]
    result = meta["model-index"][0]["results"][0]
    assert meta["model-index"][0]["name"] == "snakes"
    assert result["task"]["type"] == "image-classification"
    assert {"type": "accuracy", "value": 0.875, "name": "Validation accuracy"} in result["metrics"]


def test_the_card_lists_classes_with_scientific_names_precision_and_recall(artifact):
    card = build_card(artifact)
    row = next(line for line in card.splitlines() if line.startswith("| `atheris_squamigera`"))
    assert "African bush viper" in row and "*Atheris squamigera*" in row and "| yes |" in row
    assert "0.900" in row and "0.850" in row and "| 20 |" in row
    assert "12.5%" in card and "40 held-out images" in card


def test_the_card_has_the_reproduce_command_training_config_safety_line_and_intended_use(artifact):
    card = build_card(artifact, "alice/snakes")
    assert "```bash\npython -m train.fit data/in4 --out runs/in4 --epochs 3\n```" in card
    assert "| seed | `7` |" in card and "| recipe | `fast` |" in card
    assert "| views per photo | 1 (the photo) |" in card
    assert "Not for snakebite or medical decisions" in card
    assert "## Intended use" in card and "## Limitations" in card
    assert 'pull_model("alice/snakes"' in card


def test_the_card_says_which_two_views_the_network_averages(artifact):
    from snake_model.spec import ModelSpec

    spec = ModelSpec.load(artifact / "config.json")
    for zoom, text in [(1.0, "the photo and its mirror image |"), (0.8, "the mirror image of its central 80%, zoomed")]:
        spec.tta_flip, spec.tta_zoom = True, zoom
        spec.save(artifact / "config.json")
        assert text in build_card(artifact)


def test_without_a_manifest_the_licences_are_stated_as_unknown(artifact):
    card = build_card(artifact)
    assert "Sources and licences: **unknown**" in card


def test_a_gather_manifest_gives_a_licence_breakdown_per_source(artifact, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [("inaturalist", "CC-BY")] * 3 + [("inaturalist", "CC0"), ("ddgs", "unknown"), ("ddgs", "")]
    with open(data / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "source", "licence", "use", "author"])
        for src, lic in rows:
            use = "publishable" if lic.startswith("CC") else "train-only"
            w.writerow(["python_bivittatus", src, lic, use, "someone"])
    (data / "ATTRIBUTION.md").write_text("# credits\n")
    card = build_card(artifact, data_dir=data)
    assert "6 images, from the gather manifest" in card
    assert "| inaturalist | CC-BY | 3 |" in card and "| ddgs | unknown | 2 |" in card
    assert "publishable 4, train-only 2" in card
    assert "[ATTRIBUTION.md](ATTRIBUTION.md)" in card


def test_the_card_links_the_pictures_only_when_they_exist(artifact):
    assert "confusion_matrix.png" not in build_card(artifact)
    (artifact / "confusion_matrix.png").write_bytes(b"png")
    assert "![Confusion matrix](confusion_matrix.png)" in build_card(artifact)


def test_a_card_without_metrics_still_builds_and_says_so(artifact):
    (artifact / "metrics.json").unlink()
    card = build_card(artifact)
    assert "No validation metrics were recorded" in card
    assert "model-index" not in front_matter(card)


def test_a_class_without_validation_images_shows_n_a_and_is_left_out_of_the_macro_f1(artifact):
    m = json.loads((artifact / "metrics.json").read_text())
    m["valid_error"] = 0.0
    m["per_class"] = {
        "atheris_squamigera": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 20},
        "python_bivittatus": {"precision": None, "recall": None, "f1": None, "support": 0},
    }
    (artifact / "metrics.json").write_text(json.dumps(m))
    card = build_card(artifact)
    row = next(line for line in card.splitlines() if line.startswith("| `python_bivittatus`"))
    assert row.endswith("| n/a | n/a | n/a | 0 |"), row
    result = front_matter(card)["model-index"][0]["results"][0]["metrics"]
    assert {"type": "f1", "value": 1.0, "name": "Validation macro F1"} in result  # not (1 + 0) / 2


def test_the_decoy_background_class_is_not_counted_as_a_snake_species(artifact):
    spec = ModelSpec.load(artifact / CONFIG)
    spec.labels = [*LABELS, "not_a_snake"]
    spec.abstain_threshold = 0.4
    spec.save(artifact / CONFIG)
    m = json.loads((artifact / "metrics.json").read_text())
    (artifact / "metrics.json").write_text(json.dumps({**m, "ece_after": 0.05, "valid_abstain_rate": 0.025}))
    card = build_card(artifact)
    assert "an image classifier of 2 snake species" in card
    assert "any of the 2 snakes I know" in card and "2.5% of the validation snakes" in card
    assert "Burmese python (Python bivittatus), and `not_a_snake` for photos of anything else" in card
