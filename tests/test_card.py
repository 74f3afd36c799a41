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
from train.card import build_card, publishable_montages  # noqa: E402
from train.data import BACKGROUND_LABEL  # noqa: E402

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


COLUMNS = ["class", "source", "licence", "use", "author", "path"]


def write_manifest(data: Path, rows: list[dict], encoding: str = "utf-8") -> None:
    """manifest.csv with gather's main columns; rows are dicts of some of them."""
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "manifest.csv", "w", newline="", encoding=encoding) as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def photo(data: Path, rel: str) -> str:
    """An image file at data/rel (the card goes by the suffix, never decodes it); returns rel."""
    (data / rel).parent.mkdir(parents=True, exist_ok=True)
    (data / rel).write_bytes(b"jpg")
    return rel


def row(path: str, source: str = "inaturalist", licence: str = "CC-BY", use: str = "publishable", **kw) -> dict:
    return {"class": path.split("/")[0], "source": source, "licence": licence, "use": use, "path": path, **kw}


def set_metrics(artifact: Path, **kw) -> None:
    m = json.loads((artifact / "metrics.json").read_text())
    (artifact / "metrics.json").write_text(json.dumps({**m, **kw}))


def data_section(card: str) -> str:
    return card[card.index("## Data and licences") :]


def test_a_gather_manifest_gives_a_licence_breakdown_per_source(artifact, tmp_path):
    data = tmp_path / "data"
    licences = [("inaturalist", "CC-BY")] * 3 + [("inaturalist", "CC0"), ("ddgs", "unknown"), ("ddgs", "")]
    rows = [
        row(
            photo(data, f"python_bivittatus/{i}.jpg"), src, lic, "publishable" if lic.startswith("CC") else "train-only"
        )
        for i, (src, lic) in enumerate(licences)
    ]
    write_manifest(data, rows)
    (data / "ATTRIBUTION.md").write_text("# credits\n")
    card = build_card(artifact, data_dir=data)
    assert "hold 6 photos; 6 of them have a row in the gather manifest" in card
    assert "| inaturalist | CC-BY | 3 |" in card and "| ddgs | unknown | 2 |" in card
    assert "publishable 4, train-only 2" in card
    assert "no licence record" not in card and "**unknown**" not in card
    assert "[ATTRIBUTION.md](ATTRIBUTION.md)" in card


def test_the_licence_counts_leave_out_photos_deleted_or_set_aside_and_count_photos_without_a_record(artifact, tmp_path):
    data = tmp_path / "data"
    rows = [row(photo(data, f"python_bivittatus/{i}.jpg")) for i in range(4)]
    rows += [row(f"python_bivittatus/gone{i}.jpg") for i in range(2)]  # deleted since
    rows += [row(photo(data, f"{d}/python_bivittatus/x.jpg")) for d in ("_trash", "_quarantine")]
    rows += [row(photo(data, "_not_snake/y.jpg"))]
    write_manifest(data, rows)
    for i in range(3):
        photo(data, f"atheris_squamigera/by_hand_{i}.png")  # copied in by hand: no licence record
    section = data_section(build_card(artifact, data_dir=data))
    assert "hold 7 photos; 4 of them have a row in the gather manifest" in section
    assert "| inaturalist | CC-BY | 4 |" in section and "publishable 4." in section
    assert "**3 of these photos have no licence record**" in section and "`atheris_squamigera` 3" in section

    # unreadable photos that train.fit skipped were not trained on
    set_metrics(artifact, skipped_images={"atheris_squamigera/by_hand_0.png": "cannot decode"})
    assert "**2 of these photos have no licence record**" in data_section(build_card(artifact, data_dir=data))


def test_the_licence_counts_follow_the_photos_metrics_json_says_the_model_was_built_from(artifact, tmp_path):
    data = tmp_path / "data"
    rows = [row(photo(data, f"python_bivittatus/{i}.jpg")) for i in range(3)]
    rows += [row("python_bivittatus/deleted_after_training.jpg", licence="CC-BY-NC", use="train-only")]
    rows += [row(photo(data, "python_bivittatus/added_after_training.jpg"))]
    write_manifest(data, rows)
    train = ["python_bivittatus/0.jpg", "python_bivittatus/1.jpg", "python_bivittatus/deleted_after_training.jpg"]
    train += ["atheris_squamigera/by_hand.jpg", "/home/me/decoys/d0.png", "--background/d1.png"]
    set_metrics(artifact, n_train=len(train), train_paths=train, n_valid=1, valid_paths=["python_bivittatus/2.jpg"])
    section = data_section(build_card(artifact, data_dir=data))
    assert "trained and validated on 7 photos; 4 of them have a row in the gather manifest" in section
    assert "| inaturalist | CC-BY | 3 |" in section and "| inaturalist | CC-BY-NC | 1 |" in section
    assert "**3 of these photos have no licence record**" in section
    assert "--background decoys 2" in section and "`atheris_squamigera` 1" in section
    assert "/home/me" not in section  # a local path is never published in the card


def test_a_manifest_that_is_not_utf8_still_gives_a_card_that_says_so(artifact, tmp_path):
    data = tmp_path / "data"
    rows = [row(photo(data, f"python_bivittatus/{i}.jpg"), author="José Núñez") for i in range(2)]
    rows += [row(photo(data, "python_bivittatus/2.jpg"), source="Fundación Núñez")]
    write_manifest(data, rows, encoding="cp1252")  # saved from Excel
    card = build_card(artifact, data_dir=data)
    assert "hold 3 photos; 3 of them have a row in the gather manifest" in card
    assert "| inaturalist | CC-BY | 2 |" in card and "| Fundaci\ufffdn N\ufffd\ufffdez | CC-BY | 1 |" in card
    assert "manifest.csv is not UTF-8" in card
    assert "batch_preview.png" not in publishable_montages(artifact, data)  # and it does not raise either


def test_a_manifest_that_cannot_be_read_gives_a_card_that_says_the_licences_are_unknown(artifact, tmp_path):
    data = tmp_path / "data"
    write_manifest(data, [row(photo(data, "python_bivittatus/0.jpg"), author="x" * (csv.field_size_limit() + 1))])
    card = build_card(artifact, data_dir=data)
    assert "Sources and licences: **unknown**. The gather manifest could not be read (Error:" in card
    assert "## Training" in card  # the rest of the card is there
    set_metrics(artifact, n_train=1, train_paths=["python_bivittatus/0.jpg"])
    assert publishable_montages(artifact, data) == set()
    assert build_card(artifact, data_dir=data, for_upload=True)


def test_the_batch_preview_is_publishable_only_when_every_training_photo_has_a_publishable_row(artifact, tmp_path):
    data = tmp_path / "data"
    train = [f"python_bivittatus/{i}.jpg" for i in range(4)]
    write_manifest(data, [row(photo(data, p)) for p in train])
    # every row of the manifest is publishable, but which photos were trained on is not recorded: unknown
    assert "batch_preview.png" not in publishable_montages(artifact, data)
    set_metrics(artifact, n_train=4, train_paths=train)
    assert "batch_preview.png" in publishable_montages(artifact, data)
    set_metrics(artifact, n_train=5, train_paths=train)  # train_paths that miss a photo
    assert "batch_preview.png" not in publishable_montages(artifact, data)
    # a folder copied in by hand, trained on, with no row: its licence is unknown
    set_metrics(artifact, n_train=5, train_paths=[*train, "atheris_squamigera/by_hand.jpg"])
    assert "batch_preview.png" not in publishable_montages(artifact, data)
    # a photo with a train-only row
    write_manifest(data, [row(p) for p in train[:3]] + [row(train[3], licence="CC-BY-NC", use="train-only")])
    set_metrics(artifact, n_train=4, train_paths=train)
    assert "batch_preview.png" not in publishable_montages(artifact, data)
    # --background decoys come from a folder this manifest does not describe
    write_manifest(data, [row(p) for p in train])
    assert "batch_preview.png" in publishable_montages(artifact, data)
    spec = ModelSpec.load(artifact / CONFIG)
    spec.labels = [*LABELS, BACKGROUND_LABEL]
    spec.save(artifact / CONFIG)
    assert "batch_preview.png" not in publishable_montages(artifact, data)


def test_top_losses_are_publishable_only_when_each_photo_shown_has_only_publishable_rows(artifact, tmp_path):
    data = tmp_path / "data"
    shown = [f"python_bivittatus/{i}.jpg" for i in range(3)]
    write_manifest(data, [row(p) for p in shown])
    set_metrics(artifact, top_losses=[{"path": p, "actual": "python_bivittatus"} for p in shown])
    assert "top_losses.png" in publishable_montages(artifact, data)
    write_manifest(data, [row(p) for p in shown] + [row(shown[0], licence="", use="train-only")])  # a second row
    assert "top_losses.png" not in publishable_montages(artifact, data)
    set_metrics(artifact, top_losses=[{"path": ["not", "a", "path"]}])  # malformed metrics.json: no crash
    assert publishable_montages(artifact, data) == set()


def test_names_from_folders_classes_json_and_the_manifest_are_shown_literally(artifact, tmp_path):
    odd = ["<img src=x onerror=alert(1)>", "king|snake", "rat_snake"]
    spec = ModelSpec.load(artifact / CONFIG)
    spec.labels = odd
    spec.class_info = {
        "rat_snake": {"display_name": "Rat snake | black", "scientific_name": "Pantherophis *obsoletus*"},
        "king|snake": {"display_name": "King `snake`"},
    }
    spec.training["data_dir_name"] = "my|data"
    spec.save(artifact / CONFIG)
    set_metrics(artifact, labels=odd, per_class={})
    data = tmp_path / "data"
    write_manifest(data, [row(photo(data, "rat_snake/0.jpg"), source="web | <b>x</b>", licence="CC|BY")])
    card = build_card(artifact, data_dir=data)
    assert "<img" not in card.replace("`<img src=x onerror=alert(1)>`", "") and "<b>" not in card
    assert "\n\n&lt;img src=x onerror=alert(1)&gt;, King \\`snake\\`, Rat snake \\| black (Pantherophis" in card
    for head, cells in (("## Classes", 8), ("| source | licence | images |", 3), ("| setting | value |", 2)):
        table = card[card.index(head) :].split("\n\n")[1 if head.startswith("#") else 0].splitlines()
        assert all(line.replace("\\|", "").count("|") == cells + 1 for line in table), table  # no cell split
    assert "| `king\\|snake` | King \\`snake\\` |" in card
    assert "*Pantherophis \\*obsoletus\\** |" in card
    assert "| web \\| &lt;b&gt;x&lt;/b&gt; | CC\\|BY | 1 |" in card
    assert "Trained on the image folder `my|data`." in card and "| data\\_dir\\_name | `my\\|data` |" in card
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(card.split("---\n", 2)[2])
    assert "<img" not in html and "<b>" not in html
    classes = html[html.index("<h2>Classes") : html.index("</table>", html.index("<h2>Classes"))]
    assert classes.count("<tr>") == 4 and all(r.count("<td>") == 8 for r in classes.split("<tr>")[2:])
    assert "<td><code>king|snake</code></td>" in classes and "<td>Rat snake | black</td>" in classes


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


def test_the_use_section_names_a_hub_other_than_huggingface_co(artifact):
    card = build_card(artifact, "alice/snakes", endpoint="http://127.0.0.1:8123/")
    assert (
        "`HF_ENDPOINT=http://127.0.0.1:8123 MODEL_REPO=alice/snakes MODEL_REVISION=<commit sha> python app.py`" in card
    )
    assert 'pull_model("alice/snakes", revision="<commit sha>", endpoint="http://127.0.0.1:8123")' in card
    for default in (None, "https://huggingface.co", "https://huggingface.co/"):
        card = build_card(artifact, "alice/snakes", endpoint=default)
        assert "HF_ENDPOINT" not in card and "endpoint=" not in card
        assert "`MODEL_REPO=alice/snakes MODEL_REVISION=<commit sha> python app.py`" in card
