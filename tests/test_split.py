"""Dedupe and split: near-duplicates never straddle train and valid; exact duplicates and broken files go aside."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from train import manifest as mf
from train.data import list_images, read_splits
from train.gather import main as gather_main
from train.split import main, near_duplicate_groups, split_dataset


def photo(seed: int, size=(96, 72)) -> Image.Image:
    """A smooth random picture: unrelated seeds give perceptual hashes about 32 bits apart."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB")
    return small.resize(size, Image.BILINEAR)


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def near_copy(img: Image.Image) -> bytes:
    """What a web scrape is full of: the same photo resized, stamped with a watermark and re-encoded."""
    im = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.LANCZOS)
    ImageDraw.Draw(im).text((2, im.height - 12), "stock", fill=(255, 255, 255))
    return jpeg(im, quality=60)


def read_split_file(root: Path) -> dict[str, str]:
    with open(root / "splits.csv", newline="") as fh:
        return {r["path"]: r["split"] for r in csv.DictReader(fh)}


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, list[list[str]]]:
    """Two classes of 12 photos; two photos per class also appear as two near-copies each (32 files)."""
    root = tmp_path / "data"
    groups = []
    for c, label in enumerate(["cobra", "krait"]):
        (root / label).mkdir(parents=True)
        for i in range(12):
            img = photo(100 * c + i)
            (root / label / f"{i}.jpg").write_bytes(jpeg(img))
            if i < 2:
                (root / label / f"{i}_copy.jpg").write_bytes(near_copy(img))
                (root / label / f"{i}_copy2.jpg").write_bytes(jpeg(img.crop((2, 2, img.width - 2, img.height - 2)), 75))
                groups.append([f"{label}/{i}.jpg", f"{label}/{i}_copy.jpg", f"{label}/{i}_copy2.jpg"])
    return root, groups


def test_near_duplicates_always_land_on_the_same_side_of_the_split(dataset):
    root, groups = dataset
    for seed in range(15):
        res = split_dataset(root, valid_pct=0.3, seed=seed)
        splits = read_split_file(root)
        assert set(splits) == {p for p in res.splits} and len(splits) == 32
        for g in groups:
            assert len({splits[p] for p in g}) == 1, f"seed {seed}: {g} straddles train and valid"
        assert {s for p, s in splits.items() if p.startswith("cobra/")} == {"train", "valid"}
    assert sorted(map(sorted, res.near_groups)) == sorted(map(sorted, groups))


def test_without_near_duplicate_grouping_the_same_seeds_do_separate_copies(dataset):
    """The control of the test above: with --threshold 0 (only identical hashes group) the copies are split apart,
    so what keeps them together there is the grouping, not luck."""
    root, groups = dataset
    straddled = 0
    for seed in range(15):
        res = split_dataset(root, valid_pct=0.3, seed=seed, threshold=0)
        assert res.near_groups == []
        splits = read_split_file(root)
        straddled += sum(len({splits[p] for p in g}) > 1 for g in groups)
    assert straddled > 0


def test_unrelated_photos_are_not_grouped():
    hashes = [int(str(__import__("imagehash").phash(photo(s))), 16) for s in range(40)]
    assert len(set(near_duplicate_groups(hashes, 10))) == 40


def test_exact_duplicates_and_broken_files_are_moved_aside_and_left_out_of_the_split(dataset):
    root, _ = dataset
    (root / "cobra" / "5_again.jpg").write_bytes((root / "cobra" / "5.jpg").read_bytes())
    (root / "krait" / "page.jpg").write_bytes(b"<html>403 Forbidden</html>")
    res = split_dataset(root, seed=1)
    splits = read_split_file(root)
    assert res.exact_duplicates == [("cobra/5_again.jpg", "cobra/5.jpg")]
    assert (root / "_quarantine" / "duplicates" / "cobra" / "5_again.jpg").is_file()
    assert (root / "_quarantine" / "unreadable" / "krait" / "page.jpg").is_file()
    assert "cobra/5_again.jpg" not in splits and "krait/page.jpg" not in splits and "cobra/5.jpg" in splits
    assert list(res.unreadable) == ["krait/page.jpg"]
    ds = list_images(root)  # what train.fit sees: the split covers every remaining file
    train, valid = read_splits(ds)
    assert len(train) + len(valid) == len(ds.paths) == len(splits)


def test_an_image_filed_under_two_classes_is_reported_and_kept_on_one_side(dataset, capsys):
    root, _ = dataset
    (root / "krait" / "odd.jpg").write_bytes((root / "cobra" / "7.jpg").read_bytes())
    assert main([str(root), "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "groups under two or more classes: 1" in out and "cobra/7.jpg  krait/odd.jpg" in out
    splits = read_split_file(root)
    assert splits["cobra/7.jpg"] == splits["krait/odd.jpg"]
    assert (root / "krait" / "odd.jpg").is_file()  # a label conflict is for a person to settle


def test_split_keeps_the_rows_and_columns_of_a_hand_edited_manifest(dataset):
    root, _ = dataset
    (root / "cobra" / "5_again.jpg").write_bytes((root / "cobra" / "5.jpg").read_bytes())
    lines = ["path,class,my_notes", "cobra/5_again.jpg,cobra,copy", "cobra/1.jpg,cobra,keep me", "krait/1.jpg,krait,"]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    assert main([str(root)]) == 0
    assert (root / "manifest.csv").read_text() == "\n".join(lines[:1] + lines[2:]) + "\n"


def test_split_after_gather_keeps_manifest_and_attribution_in_step(dataset, tmp_path):
    root, _ = dataset
    (root / "cobra" / "3_again.jpg").write_bytes(near_copy(photo(3)))
    out = tmp_path / "gathered"
    assert gather_main(["--folder", str(root), "--out", str(out)]) == 0
    before = mf.read_manifest(out)
    # copies smuggled in after gathering (by hand), named to sort before and after the gathered file: the split
    # drops both and keeps the gathered file, whose provenance the manifest records
    dup = before[0]
    for name in ("000_by_hand.jpg", "zzz_by_hand.jpg"):
        (out / dup["class"] / name).write_bytes((out / dup["path"]).read_bytes())
    assert main([str(out)]) == 0
    rows = mf.read_manifest(out)
    assert dup["path"] in {r["path"] for r in rows}
    assert (
        {r["path"] for r in rows}
        == set(read_split_file(out))
        == {p.relative_to(out).as_posix() for d in mf.class_dirs(out) for p in d.iterdir()}
    )
    assert "by_hand" not in (out / "ATTRIBUTION.md").read_text()
    report = json.loads((out / "split_report.json").read_text())
    assert {d["dropped"].split("/")[-1] for d in report["exact_duplicates_dropped"]} >= {
        "000_by_hand.jpg",
        "zzz_by_hand.jpg",
    }


def test_bad_input_fails_with_a_clear_message(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 1
    (tmp_path / "empty" / "a").mkdir(parents=True)
    assert main([str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "is not a folder" in err and "no images found" in err
    for flag, value in (("--valid-pct", "2"), ("--valid-pct", "nan"), ("--threshold", "65"), ("--threshold", "x")):
        with pytest.raises(SystemExit) as e:
            main([str(tmp_path), flag, value])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert f"argument {flag}" in err and value in err, err


def write_odd_name(folder: Path, data: bytes) -> str:
    """A file named with the byte 0xE9 (Latin-1 e-acute), not UTF-8; returns its relative name as Python sees it."""
    try:
        with open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), "wb") as fh:
            fh.write(data)
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    return os.fsdecode(b"caf\xe9.jpg")


def test_a_file_name_that_is_not_utf8_is_left_out_with_a_warning_and_the_rest_is_split(dataset, caplog):
    root, groups = dataset
    odd = write_odd_name(root / "cobra", near_copy(photo(0).rotate(1)))  # a near-copy of cobra/0.jpg
    (root / "cobra" / "5_again.jpg").write_bytes((root / "cobra" / "5.jpg").read_bytes())
    for seed in range(6):
        caplog.clear()
        assert main([str(root), "--seed", str(seed), "--valid-pct", "0.5"]) == 0
        assert "cafe" not in caplog.text and "caf\\xe9.jpg" in caplog.text and "Rename it" in caplog.text
        splits = read_split_file(root)
        assert len(splits) == 32 and not any("caf" in p for p in splits)
        # train.fit puts a file splits.csv does not name in train, so its near-duplicates stay in train too
        assert {splits[p] for p in groups[0]} == {"train"}
    assert (root / "cobra" / odd).is_file()  # left where it was
    assert (root / "_quarantine" / "duplicates" / "cobra" / "5_again.jpg").is_file()  # the rest of the work done
    report = json.loads((root / "split_report.json").read_text(encoding="utf-8"))
    assert report["not_utf8_names_left_out"] == ["cobra/caf\\xe9.jpg"]
    ds = list_images(root)
    train, valid = read_splits(ds)
    assert str(root / "cobra" / odd) in {str(ds.paths[i]) for i in train}


def manifest_rows(root: Path, phash: dict[str, str]) -> None:
    """A manifest in gather's columns for every file of root, with the given (hand-edited) phash per path."""
    rows = []
    for p in sorted(root.glob("*/*.jpg")):
        rel = p.relative_to(root).as_posix()
        row = dict.fromkeys(mf.COLUMNS, "")
        row |= {
            "class": p.parent.name,
            "path": rel,
            "licence": "cc0",
            "sha256": hashlib.sha256(p.read_bytes()).hexdigest(),
        }
        row["phash"] = phash.get(rel, "")
        rows.append(row)
    (root / "manifest.csv").write_bytes(mf.rows_to_csv(rows))


def test_a_hand_edited_phash_in_the_manifest_is_computed_from_the_image_instead(dataset, caplog):
    root, groups = dataset
    bad = {"cobra/0.jpg": "not-a-hash-at-al", "cobra/1.jpg": "0x12345678abcdef", "krait/0_copy.jpg": "abc"}
    manifest_rows(root, bad)
    assert len(mf.read_manifest(root)) == 32
    assert main([str(root)]) == 0
    report = json.loads((root / "split_report.json").read_text())
    assert sorted(map(sorted, report["groups"])) == sorted(map(sorted, groups))  # the real hashes group them
    assert "not-a-hash-at-al" in caplog.text and "computing it from the image" in caplog.text


def test_hidden_image_files_are_deduplicated_and_split_like_train_fit_sees_them(dataset):
    root, groups = dataset
    (root / "cobra" / ".0_copy3.jpg").write_bytes(near_copy(photo(0).rotate(1)))
    (root / "krait" / ".5_again.jpg").write_bytes((root / "krait" / "5.jpg").read_bytes())
    for seed in range(6):
        res = split_dataset(root, valid_pct=0.3, seed=seed)
        splits = read_split_file(root)
        group = [*groups[0], "cobra/.0_copy3.jpg"]
        assert len({splits[p] for p in group}) == 1, f"seed {seed}: the hidden copy straddles the split"
        assert sorted(group) in res.near_groups
    # the visible file is kept over its hidden exact copy
    assert (root / "_quarantine" / "duplicates" / "krait" / ".5_again.jpg").is_file()
    assert (root / "krait" / "5.jpg").is_file()
    ds = list_images(root)  # what train.fit sees: every file is named in splits.csv
    assert {ds.rel(p) for p in ds.paths} == set(read_split_file(root))


def test_a_file_name_with_a_line_break_is_left_out_not_written_as_another_name(dataset, caplog):
    root, _ = dataset
    odd = "tab\there\nnext.jpg"
    (root / "cobra" / odd).write_bytes(near_copy(photo(7).rotate(2)))
    assert main([str(root)]) == 0
    assert "cobra/tab\\there\\nnext.jpg" in caplog.text and "Rename it" in caplog.text
    text = (root / "splits.csv").read_text(encoding="utf-8")
    assert "tab" not in text and "next.jpg" not in text  # csv rows would replace the breaks: a path that is not there
    assert (root / "cobra" / odd).is_file()
