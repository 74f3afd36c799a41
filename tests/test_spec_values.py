"""config.json values: NaN, Infinity, wrong types and colliding labels are refused at load, not per request."""

from __future__ import annotations

import json

import pytest

from snake_model.spec import ModelSpec, SpecError

BASE = {
    "labels": ["cobra", "python", "viper"],
    "arch": "tf_efficientnet_lite0",
    "image_size": 64,
    "resize_method": "squish",
    "weights_sha256": "0" * 64,
}


def _load(tmp_path, **fields):
    # json.dumps writes NaN / Infinity, and Python's json.loads reads them back: exactly the audit's config.json
    (tmp_path / "config.json").write_text(json.dumps({**BASE, **fields}))
    return ModelSpec.load(tmp_path / "config.json")


def test_a_plain_config_loads(tmp_path):
    spec = _load(tmp_path, abstain_threshold=0.4, temperature=1.3, mean=[0.4, 0.5, 0.6], ood={})
    assert spec.abstain_threshold == 0.4 and spec.mean == (0.4, 0.5, 0.6)
    knn = _load(tmp_path, abstain_score="knn", abstain_threshold=1.2, ood={"k": 5, "sha256": "ab", "file": "o.st"})
    assert knn.abstain_threshold == 1.2  # kNN scores are 1 - cosine similarity: up to 2
    assert _load(tmp_path, temperature=2, image_size=288).temperature == 2  # an int is a fine float


@pytest.mark.parametrize(
    "field, value",
    [
        ("abstain_threshold", float("nan")),
        ("abstain_threshold", float("inf")),
        ("abstain_threshold", -0.1),
        ("abstain_threshold", 1.5),  # max-softmax scores live in [0, 1]
        ("temperature", float("inf")),
        ("temperature", float("nan")),
        ("temperature", 0),
        ("temperature", -1.0),
        ("temperature", 1e9),
        ("mean", [0.5, float("nan"), 0.5]),
        ("mean", [0.5, float("inf"), 0.5]),
        ("std", [0.5, 0.5, float("nan")]),
        ("std", [0.5, 0.5, float("inf")]),
        ("std", [0.5, 0.0, 0.5]),
        ("tta_zoom", float("nan")),
        ("val_xtra", float("nan")),
        ("val_xtra", float("inf")),
    ],
)
def test_non_finite_and_out_of_range_numbers_are_refused(tmp_path, field, value):
    with pytest.raises(SpecError, match=field):
        _load(tmp_path, **{field: value})


def test_a_knn_threshold_above_the_knn_score_range_is_refused(tmp_path):
    with pytest.raises(SpecError, match="abstain_threshold"):
        _load(tmp_path, abstain_score="knn", abstain_threshold=2.5, ood={"k": 5, "sha256": "ab"})


@pytest.mark.parametrize(
    "field, value",
    [
        ("abstain_threshold", "0.4"),
        ("abstain_threshold", True),
        ("temperature", "1.0"),
        ("temperature", True),
        ("mean", ["a", "b", "c"]),
        ("mean", "abc"),
        ("std", [True, 0.5, 0.5]),
        ("mean", [0.5, 0.5]),
        ("image_size", 16.9),
        ("image_size", 224.0),
        ("image_size", True),
        ("image_size", "224"),
        ("tta_flip", "no"),
        ("tta_flip", 0),
        ("tta_zoom", "0.8"),
        ("val_xtra", None),
        ("format_version", 1.0),
        ("ood", {"k": "five"}),
        ("ood", {"k": 0}),
        ("ood", {"k": 2.5}),
        ("ood", {"k": True}),
        ("ood", {"file": "../../etc/passwd"}),
        ("arch", 7),
    ],
)
def test_wrong_types_are_refused_at_load(tmp_path, field, value):
    with pytest.raises(SpecError, match=field.split(".")[0]):
        _load(tmp_path, **{field: value})


@pytest.mark.parametrize("labels", [["cobra", ""], ["cobra", "  "], ["cobra", "cobra"]])
def test_empty_and_duplicate_labels_are_refused(tmp_path, labels):
    with pytest.raises(SpecError, match="labels"):
        _load(tmp_path, labels=labels)


def test_two_labels_with_the_same_display_name_are_refused_naming_both(tmp_path):
    # "king_cobra" displays as "king cobra": the app's {display name: probability} would merge the two classes
    with pytest.raises(SpecError, match="'king_cobra' and 'king cobra'"):
        _load(tmp_path, labels=["king_cobra", "king cobra"])
    info = {"a": {"display_name": "Cobra"}, "b": {"display_name": "Cobra"}}
    with pytest.raises(SpecError, match="'a' and 'b' both display as 'Cobra'"):
        _load(tmp_path, labels=["a", "b"], class_info=info)
    # the same common name with different scientific names displays differently: fine
    info = {
        "a": {"display_name": "Cobra", "scientific_name": "Naja naja"},
        "b": {"display_name": "Cobra", "scientific_name": "Naja kaouthia"},
    }
    assert _load(tmp_path, labels=["a", "b"], class_info=info).display_name("b") == "Cobra (Naja kaouthia)"


def test_a_non_string_scientific_name_is_refused(tmp_path):
    with pytest.raises(SpecError, match="scientific_name"):
        _load(tmp_path, labels=["a"], class_info={"a": {"scientific_name": 3}})


@pytest.mark.parametrize(
    "arch",
    [
        "hf-hub:someone/remote-arch",  # timm would fetch a config from the network, unpinned
        "local-dir:/etc",  # timm would read outside the model folder
        "resnet18.bogus_tag",  # a pretrained tag: timm resolves it, and raises RuntimeError on a bad one
        "timm/resnet18",
        "ResNet18",
        "",
        "no_such_net",
        "resnet18 ",
    ],
)
def test_arch_must_be_a_plain_timm_model_name(tmp_path, arch):
    with pytest.raises(SpecError, match="arch"):
        _load(tmp_path, arch=arch)


def test_plain_timm_model_names_are_accepted(tmp_path):
    assert _load(tmp_path, arch="resnet18").arch == "resnet18"
    assert _load(tmp_path, arch="tf_efficientnet_lite0", head="fastai").head == "fastai"


def test_an_unknown_head_is_refused(tmp_path):
    with pytest.raises(SpecError, match="head"):
        _load(tmp_path, head="mlp")


@pytest.mark.parametrize("venomous", ["false", "true", 0, 1, [], {}])
def test_venomous_must_be_a_json_boolean_or_null(tmp_path, venomous):
    # the string "false" is truthy: the app would warn that a harmless species is venomous
    with pytest.raises(SpecError, match=r"class_info\['a'\]\.venomous"):
        _load(tmp_path, labels=["a", "b"], class_info={"a": {"venomous": venomous}})


def test_venomous_true_false_and_null_are_accepted(tmp_path):
    info = {"a": {"venomous": True}, "b": {"venomous": False}, "c": {"venomous": None}, "d": {}}
    assert _load(tmp_path, labels=["a", "b", "c", "d"], class_info=info).class_info["a"]["venomous"] is True


def test_a_non_string_display_name_is_refused(tmp_path):
    with pytest.raises(SpecError, match="display_name"):
        _load(tmp_path, labels=["a"], class_info={"a": {"display_name": ["Cobra"]}})


@pytest.mark.parametrize("text", ["[" * 100_000, '{"labels": ' + "[" * 100_000])
def test_a_deeply_nested_config_json_is_a_spec_error_not_a_recursion_error(tmp_path, text):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(SpecError, match="nested too deeply|not valid JSON"):
        ModelSpec.load(tmp_path / "config.json")
