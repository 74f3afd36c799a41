"""Dedupe and split: near-duplicates never straddle train and valid; exact duplicates and broken files go aside."""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import logging
import os
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from train import manifest as mf
from train import split as split_mod
from train.data import list_images, read_splits
from train.gather import main as gather_main
from train.quality import duplicate_clusters, image_checks
from train.split import main, near_duplicate_groups, near_duplicate_pairs, phash_pair, split_dataset


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
        res = split_dataset(root, valid_pct=0.3, seed=seed, reshuffle=True)
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
        res = split_dataset(root, valid_pct=0.3, seed=seed, threshold=0, reshuffle=True)
        assert res.near_groups == []
        splits = read_split_file(root)
        straddled += sum(len({splits[p] for p in g}) > 1 for g in groups)
    assert straddled > 0


def test_unrelated_photos_are_not_grouped():
    pairs = [phash_pair(photo(s)) for s in range(40)]
    hashes, mirrors = [h for h, _ in pairs], [m for _, m in pairs]
    assert hashes == [int(str(imagehash.phash(photo(s))), 16) for s in range(40)]
    assert len(set(near_duplicate_groups(hashes, 10))) == 40
    assert len(set(near_duplicate_groups(hashes, 10, mirrors))) == 40  # the mirror check adds no false groups


def textured(seed: int, size=(128, 96)) -> Image.Image:
    """A busy random texture (no left-right symmetry to speak of)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), "RGB").resize(size, Image.BILINEAR)


def hash_of(data: bytes) -> tuple[int, int]:
    return phash_pair(Image.open(io.BytesIO(data)).convert("RGB"))


def bits(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def test_the_mirror_hash_is_the_phash_of_the_flipped_image():
    for seed in range(10):
        img = textured(seed)
        h, m = phash_pair(img)
        assert h == int(str(imagehash.phash(img)), 16)
        assert bits(m, int(str(imagehash.phash(ImageOps.mirror(img))), 16)) <= 2


def test_a_mirrored_copy_is_grouped_with_its_original_and_a_distinct_image_is_not():
    for seed in range(10):
        img = textured(seed)
        original, mirrored = hash_of(jpeg(img)), hash_of(near_copy(ImageOps.mirror(img)))
        distinct = hash_of(jpeg(textured(seed + 100)))
        assert bits(original[0], mirrored[0]) > 10  # what the split missed: the plain hashes are far apart
        hashes, mirrors = zip(original, mirrored, distinct, strict=True)
        g = near_duplicate_groups(list(hashes), 10, list(mirrors))
        assert g[0] == g[1] != g[2], f"seed {seed}"
        assert len(set(near_duplicate_groups(list(hashes), 10))) == 3  # the control: without mirrors, no group


def test_the_blocked_pair_search_finds_exactly_the_pairs_of_a_plain_double_loop(monkeypatch):
    rng = np.random.default_rng(5)
    base = [int(x) for x in rng.integers(0, 2**63, 30, dtype=np.int64)]
    hashes, mirrors = [], []
    for i in range(150):  # clusters of hashes a few bits apart, so there are pairs to find
        h = base[i % 30] ^ (1 << int(rng.integers(64))) ^ (1 << int(rng.integers(64)))
        hashes.append(h)
        mirrors.append(base[(i * 7) % 30] ^ (1 << int(rng.integers(64))))
    want = sorted(
        (i, j)
        for i in range(150)
        for j in range(i + 1, 150)
        if min(bits(hashes[i], hashes[j]), bits(hashes[i], mirrors[j]), bits(mirrors[i], hashes[j])) <= 6
    )
    assert want
    for entries in (1, 7, 1000, 1 << 22):  # one row per block, odd blocks, one block
        monkeypatch.setattr(split_mod, "_BLOCK_ENTRIES", entries)
        assert sorted(near_duplicate_pairs(hashes, 6, mirrors)) == want
    assert near_duplicate_pairs([hashes[0]], 6, [mirrors[0]]) == [] == near_duplicate_pairs([], 6)


def test_mirrored_copies_never_straddle_the_split(dataset):
    root, groups = dataset
    for label, i in (("cobra", 3), ("cobra", 4), ("krait", 5)):
        (root / label / f"{i}_flipped.jpg").write_bytes(near_copy(ImageOps.mirror(photo(100 * (label == "krait") + i))))
        groups.append([f"{label}/{i}.jpg", f"{label}/{i}_flipped.jpg"])
    # a mirrored copy filed under the other class too (a mislabelled re-post)
    (root / "krait" / "cobra6_flipped.jpg").write_bytes(jpeg(ImageOps.mirror(photo(6))))
    groups.append(["cobra/6.jpg", "krait/cobra6_flipped.jpg"])
    for seed in range(12):
        res = split_dataset(root, valid_pct=0.3, seed=seed, reshuffle=True)
        splits = read_split_file(root)
        for g in groups:
            assert len({splits[p] for p in g}) == 1, f"seed {seed}: {g} straddles train and valid"
    assert sorted(map(sorted, res.near_groups)) == sorted(map(sorted, groups))
    assert res.cross_class == [["cobra/6.jpg", "krait/cobra6_flipped.jpg"]]


def test_the_quality_duplicate_check_catches_mirrored_copies_from_the_mirror_phash(tmp_path):
    files = {"a.jpg": jpeg(textured(1)), "a_flipped.jpg": near_copy(ImageOps.mirror(textured(1)))}
    files["other.jpg"] = jpeg(textured(2))
    rows = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        rows.append(image_checks(tmp_path / name))
    assert rows[0]["phash"] == str(imagehash.phash(Image.open(tmp_path / "a.jpg")))
    ph, sha, mirror = ([r[k] for r in rows] for k in ("phash", "sha256", "phash_mirror"))
    assert duplicate_clusters(ph, sha, 6) == [-1, -1, -1]  # the plain hashes are far apart
    assert duplicate_clusters(ph, sha, 6, mirror_phashes=mirror) == [0, 0, -1]
    # a hand-edited hash (not 16 hex digits) or a missing mirror hash is skipped, not a crash
    assert duplicate_clusters(["0x12345678abcdef", *ph[1:]], sha, 6, mirror_phashes=[None, *mirror[1:]]) == [-1] * 3


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


def test_the_split_hashes_the_images_not_the_manifest_phash_even_a_hand_edited_one(dataset):
    root, groups = dataset
    bad = {"cobra/0.jpg": "not-a-hash-at-al", "cobra/1.jpg": "0x12345678abcdef", "krait/0_copy.jpg": "abc"}
    bad["cobra/5.jpg"] = bad["cobra/6.jpg"] = "0" * 16  # well-formed but wrong: two unrelated photos made twins
    manifest_rows(root, bad)
    assert len(mf.read_manifest(root)) == 32
    assert main([str(root)]) == 0
    report = json.loads((root / "split_report.json").read_text())
    assert sorted(map(sorted, report["groups"])) == sorted(map(sorted, groups))  # the real hashes group them


def test_hidden_image_files_are_deduplicated_and_split_like_train_fit_sees_them(dataset):
    root, groups = dataset
    (root / "cobra" / ".0_copy3.jpg").write_bytes(near_copy(photo(0).rotate(1)))
    (root / "krait" / ".5_again.jpg").write_bytes((root / "krait" / "5.jpg").read_bytes())
    for seed in range(6):
        res = split_dataset(root, valid_pct=0.3, seed=seed, reshuffle=True)
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


def test_a_read_only_data_folder_fails_before_hashing_and_names_splits_csv(dataset, monkeypatch, capsys):
    root, _ = dataset

    def read_only(d):
        return OSError(errno.EROFS, "Read-only file system", os.path.join(d, ".gather-x.part"))

    def no_scan(*a, **k):
        raise AssertionError("hashed a folder the split cannot write to")

    monkeypatch.setattr(split_mod, "write_problem", read_only)
    monkeypatch.setattr(split_mod, "scan", no_scan)
    assert main([str(root), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {root / 'splits.csv'}" in err and "Read-only file system" in err
    assert "make the folder writable" in err and ".gather-" not in err
    assert not (root / "splits.csv").exists() and not (root / "_quarantine").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to a folder without write bits")
def test_a_folder_without_write_permission_fails_before_hashing(dataset, capsys):
    root, _ = dataset
    root.chmod(0o555)
    try:
        assert main([str(root), "--quiet"]) == 1
    finally:
        root.chmod(0o755)
    err = capsys.readouterr().err
    assert "splits.csv" in err and "not writable" in err and ".gather-" not in err


def split_and_pick_valid(root: Path) -> tuple[dict[str, str], str]:
    """Split root; a single photo of cobra (no near-copies of its own) that landed in valid."""
    for seed in range(30):
        split_dataset(root, valid_pct=0.3, seed=seed, reshuffle=True)
        splits = read_split_file(root)
        valid = [p for p, s in splits.items() if s == "valid" and p.startswith("cobra/") and "_" not in p]
        if valid and any(s == "train" for p, s in splits.items() if p.startswith("krait/") and "_" not in p):
            return splits, valid[0]
    raise AssertionError("no seed put a single cobra photo in valid")


def test_files_added_after_the_split_go_to_valid_when_they_copy_a_valid_photo(dataset, caplog):
    root, _ = dataset
    splits, v = split_and_pick_valid(root)
    t = next(p for p, s in splits.items() if s == "train" and p.startswith("krait/") and "_" not in p)
    img_v = photo(int(Path(v).stem))
    img_t = photo(100 + int(Path(t).stem))
    added = {
        "cobra/new_flipped.jpg": near_copy(ImageOps.mirror(img_v)),  # a mirrored re-post of the valid photo
        "krait/moved_here.jpg": (root / v).read_bytes(),  # the valid photo, relabelled by the workbench
        "krait/copy_of_train.jpg": near_copy(img_t),  # a copy of a training photo: train, as before
        "cobra/new.jpg": jpeg(photo(999)),  # a new photo: train, as before
    }
    for rel, data in added.items():
        (root / rel).write_bytes(data)
    ds = list_images(root)
    caplog.set_level(logging.WARNING)
    train, valid = read_splits(ds)
    where = {ds.rel(ds.paths[i]): "train" for i in train} | {ds.rel(ds.paths[i]): "valid" for i in valid}
    assert {k: where[k] for k in added} == {
        "cobra/new_flipped.jpg": "valid",
        "krait/moved_here.jpg": "valid",
        "krait/copy_of_train.jpg": "train",
        "cobra/new.jpg": "train",
    }
    assert all(where[p] == s for p, s in splits.items())  # the named files keep their split
    assert (
        f"cobra/new_flipped.jpg is not in splits.csv and is a near-duplicate of the validation photo {v}" in caplog.text
    )
    assert "4 image(s)" in caplog.text and "2 near-duplicate(s) of validation photos put in valid, 2 put in train" in (
        caplog.text
    )
    assert f"python -m train.split {root}" in caplog.text


def test_the_backstop_uses_the_threshold_of_the_last_split(dataset):
    root, _ = dataset
    splits, v = split_and_pick_valid(root)
    (root / "cobra" / "new_flipped.jpg").write_bytes(near_copy(ImageOps.mirror(photo(int(Path(v).stem)))))
    report = json.loads((root / "split_report.json").read_text())
    (root / "split_report.json").write_text(json.dumps(report | {"threshold": 0}))
    h, m = hash_of((root / v).read_bytes())
    nh, nm = hash_of((root / "cobra" / "new_flipped.jpg").read_bytes())
    if min(bits(h, nm), bits(m, nh)) == 0:
        pytest.skip("the copy hashes exactly like the mirror of the original")
    ds = list_images(root)
    train, _ = read_splits(ds)
    assert "cobra/new_flipped.jpg" in {ds.rel(ds.paths[i]) for i in train}


def test_read_splits_hashes_nothing_when_splits_csv_names_every_file(dataset, monkeypatch):
    root, _ = dataset
    split_dataset(root, seed=2)

    def no_hash(img):
        raise AssertionError("hashed an image although splits.csv names every file")

    monkeypatch.setattr(split_mod, "phash_pair", no_hash)
    train, valid = read_splits(list_images(root))
    assert len(train) + len(valid) == 32


def test_a_splits_csv_saved_by_a_spreadsheet_with_a_byte_order_mark_still_reads(dataset):
    root, _ = dataset
    split_dataset(root, seed=2)
    want = read_splits(list_images(root))
    f = root / "splits.csv"
    f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())  # Excel's "CSV UTF-8"
    assert read_splits(list_images(root)) == want


def add_photos(root: Path, n: int, seed0: int = 500) -> list[str]:
    """n new unrelated photos per class; their paths."""
    added = []
    for c, label in enumerate(["cobra", "krait"]):
        for i in range(n):
            rel = f"{label}/new_{i}.jpg"
            (root / rel).write_bytes(jpeg(photo(seed0 + 100 * c + i)))
            added.append(rel)
    return added


def test_a_split_run_again_after_new_photos_keeps_every_earlier_side_and_assigns_the_new(dataset, capsys):
    root, groups = dataset
    assert main([str(root), "--seed", "5", "--quiet"]) == 0
    before = read_split_file(root)
    added = add_photos(root, 6)
    (root / "cobra" / "0_copy3.jpg").write_bytes(near_copy(photo(0).rotate(1)))  # a new copy of an earlier photo
    capsys.readouterr()
    for seed in (5, 6, 7):  # another seed does not move earlier photos either
        assert main([str(root), "--seed", str(seed), "--quiet"]) == 0
        after = read_split_file(root)
        assert {p: after[p] for p in before} == before
        assert set(after) == set(before) | set(added) | {"cobra/0_copy3.jpg"}
        assert after["cobra/0_copy3.jpg"] == before["cobra/0.jpg"]  # it joins its group's side
        for label in ("cobra", "krait"):
            mine = [s for p, s in after.items() if p.startswith(label + "/")]
            assert abs(mine.count("valid") - round(0.2 * len(mine))) <= 2  # new photos fill the valid share
        assert {after[p] for p in added} == {"train", "valid"}
        if seed == 5:  # the first run after the new photos: it says what it kept and what it assigned
            out = capsys.readouterr().out
            assert f"kept the side of {len(before)} photo(s) from the earlier splits.csv; {len(added) + 1} new" in out
            report = json.loads((root / "split_report.json").read_text())
            assert report["kept_side"] == len(before) and report["new"] == len(added) + 1


def test_the_assignment_of_new_photos_is_determined_by_the_seed(dataset, tmp_path):
    import shutil

    root, _ = dataset
    split_dataset(root, seed=3)
    add_photos(root, 8)
    other = tmp_path / "copy"
    shutil.copytree(root, other)
    split_dataset(root, seed=9)
    split_dataset(other, seed=9)
    assert read_split_file(root) == read_split_file(other)


def test_a_group_that_mixes_earlier_train_and_valid_photos_goes_wholly_to_valid(dataset, capsys):
    root, groups = dataset
    split_dataset(root, seed=1)
    splits = read_split_file(root)
    a, b, c = groups[0]  # an earlier split (another threshold, a hand edit) put the group on both sides
    splits |= {a: "train", b: "valid", c: "train"}
    mf.atomic_write(
        root / "splits.csv", mf.rows_to_csv([{"path": p, "split": s} for p, s in splits.items()], ["path", "split"])
    )
    assert main([str(root), "--quiet"]) == 0
    after = read_split_file(root)
    assert after[a] == after[b] == after[c] == "valid"
    assert all(after[p] == s for p, s in splits.items() if p not in (a, c))
    out = capsys.readouterr().out
    assert "earlier training photos moved to valid: 2" in out and a in out and c in out
    assert "kept the side of 30 photo(s)" in out and "0 new photo(s)" in out


def test_reshuffle_draws_a_fresh_split(dataset, capsys):
    root, groups = dataset
    assert main([str(root), "--seed", "1", "--quiet"]) == 0
    before = read_split_file(root)
    assert main([str(root), "--seed", "2", "--quiet"]) == 0
    assert read_split_file(root) == before  # without --reshuffle another seed changes nothing
    capsys.readouterr()
    changed = 0
    for seed in range(2, 8):
        assert main([str(root), "--seed", str(seed), "--reshuffle", "--quiet"]) == 0
        after = read_split_file(root)
        for g in groups:
            assert len({after[p] for p in g}) == 1
        changed += sum(after[p] != s for p, s in before.items())
        if changed:
            break
    assert changed
    assert "fresh split (--reshuffle)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--reshuffle" in capsys.readouterr().out
