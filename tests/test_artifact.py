"""The artifact contract: strict loading, clear errors, and the offline ImageNet backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from snake_model import artifact as artifact_module
from snake_model.artifact import (
    ArtifactError,
    load_artifact,
    load_ood_bank,
    read_json_object,
    save_artifact,
    sha256_file,
)
from snake_model.network import build_network, lite0_weights_path, rename_lite0_keys
from snake_model.spec import ModelSpec


@pytest.fixture
def artifact(tmp_path):
    m = build_network("tf_efficientnet_lite0", 3, pretrained=False)
    save_artifact(m, ModelSpec(labels=["a", "b", "c"], image_size=64), tmp_path)
    return tmp_path, m


def test_round_trip_gives_identical_weights_and_records_sha_and_versions(artifact):
    d, m = artifact
    m2, spec = load_artifact(d)
    for k, v in m.state_dict().items():
        assert torch.equal(v, m2.state_dict()[k])
    assert spec.weights_sha256 == sha256_file(d / "model.safetensors")
    assert spec.versions["torch"] and spec.labels == ["a", "b", "c"]


def test_tampered_weights_fail_the_sha256_check(artifact):
    d, _ = artifact
    sd = load_file(str(d / "model.safetensors"))
    sd["head.fc.bias"] = sd["head.fc.bias"] + 1
    save_file(sd, str(d / "model.safetensors"))
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(d)


def _rewrite(d, sd):
    save_file(sd, str(d / "model.safetensors"))
    cfg = json.loads((d / "config.json").read_text())
    cfg["weights_sha256"] = sha256_file(d / "model.safetensors")
    (d / "config.json").write_text(json.dumps(cfg))


def test_wrong_keys_are_a_clear_error_even_with_a_matching_sha(artifact):
    d, _ = artifact
    sd = load_file(str(d / "model.safetensors"))
    sd["head.classifier.weight"] = sd.pop("head.fc.weight")
    _rewrite(d, sd)
    with pytest.raises(ArtifactError, match="missing keys"):
        load_artifact(d)


def test_a_label_count_that_does_not_match_the_weights_is_a_clear_error(artifact):
    d, _ = artifact
    cfg = json.loads((d / "config.json").read_text())
    cfg["labels"] = ["a", "b", "c", "d"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="4 labels but the weights' classifier has 3 outputs"):
        load_artifact(d)


def test_missing_or_broken_files_are_clear_errors(artifact):
    d, _ = artifact
    (d / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_artifact(d)
    (d / "config.json").unlink()
    with pytest.raises(ArtifactError, match="config.json"):
        load_artifact(d)


def test_a_pickle_renamed_to_safetensors_is_refused(artifact):
    d, m = artifact
    torch.save(m.state_dict(), d / "model.safetensors")
    cfg = json.loads((d / "config.json").read_text())
    cfg["weights_sha256"] = sha256_file(d / "model.safetensors")
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="safetensors"):
        load_artifact(d)


def test_unknown_arch_and_bad_spec_fields_are_clear_errors(artifact):
    d, _ = artifact
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "resize_method": "stretch"}))
    with pytest.raises(ArtifactError, match="resize_method"):
        load_artifact(d)
    (d / "config.json").write_text(json.dumps({**cfg, "arch": "no_such_net"}))
    with pytest.raises(ArtifactError, match="unknown arch"):
        load_artifact(d)
    for field, value in [
        ("image_size", "big"),
        ("temperature", "hot"),
        ("mean", 0.5),
        ("labels", "abc"),
        ("class_info", ["a"]),
        ("class_info", {"a": "cobra"}),
        ("ood", None),
    ]:
        (d / "config.json").write_text(json.dumps({**cfg, field: value}))
        with pytest.raises(ArtifactError, match="config.json|labels|class_info|ood"):
            load_artifact(d)


@pytest.mark.parametrize("head", ["linear", "fastai"])
def test_a_feature_bank_of_the_wrong_width_is_refused_at_load(tmp_path, head):
    from snake_model.ood import make_bank
    from snake_model.predictor import Predictor

    m = build_network("tf_efficientnet_lite0", 2, head=head, pretrained=False)
    rng = np.random.default_rng(0)
    good, bad = tmp_path / "good", tmp_path / "bad"
    spec = dict(labels=["a", "b"], head=head, image_size=48, ood={"k": 1})
    save_artifact(m, ModelSpec(**spec), good, ood_bank=make_bank(rng.normal(0, 1, (20, m.body.num_features))))
    save_artifact(m, ModelSpec(**spec), bad, ood_bank=make_bank(rng.normal(0, 1, (50, 64))))  # its sha256 matches
    _, good_spec = load_artifact(good)
    assert load_ood_bank(good, good_spec).shape == (20, m.body.num_features)
    assert load_ood_bank(good, good_spec, m).shape == (20, m.body.num_features)
    _, bad_spec = load_artifact(bad)
    for model in (None, m):
        with pytest.raises(ArtifactError, match=f"64 features per row but the network .* gives {m.body.num_features}"):
            load_ood_bank(bad, bad_spec, model)
    with pytest.raises(ArtifactError, match="feature bank has 64 features"):
        Predictor(bad, backend="torch")  # the app's load path: its "could not load" page, not a 500 per request


def test_a_feature_bank_with_nan_rows_is_refused(tmp_path):
    from snake_model.ood import make_bank

    m = build_network("tf_efficientnet_lite0", 2, pretrained=False)
    bank = make_bank(np.random.default_rng(0).normal(0, 1, (5, m.body.num_features)))
    bank[2, 3] = np.nan
    save_artifact(m, ModelSpec(labels=["a", "b"], image_size=48), tmp_path, ood_bank=bank)
    with pytest.raises(ArtifactError, match="finite"):
        load_ood_bank(tmp_path, load_artifact(tmp_path)[1])


def test_nan_and_wrong_types_in_config_json_are_artifact_errors(artifact):
    d, _ = artifact
    cfg = json.loads((d / "config.json").read_text())
    for field, value in [
        ("abstain_threshold", float("nan")),
        ("temperature", float("inf")),
        ("std", [0.5, float("nan"), 0.5]),
        ("abstain_threshold", "0.4"),
        ("image_size", 16.9),
        ("tta_flip", "no"),
    ]:
        (d / "config.json").write_text(json.dumps({**cfg, field: value}))
        with pytest.raises(ArtifactError, match=field):
            load_artifact(d)


def test_offline_lite0_weights_load_strictly_into_timm_and_recognise_a_cat():
    from PIL import Image
    from skimage import data

    raw = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    renamed = rename_lite0_keys(raw)
    m = build_network("tf_efficientnet_lite0", 2, pretrained=True)
    assert torch.equal(m.body.conv_stem.weight, renamed["conv_stem.weight"])
    assert torch.equal(m.body.blocks[6][0].conv_pwl.weight, renamed["blocks.6.0.conv_pwl.weight"])
    import timm

    full = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    full.load_state_dict(renamed, strict=True)
    full.eval()
    img = Image.fromarray(data.chelsea()).convert("RGB").resize((224, 224))
    x = (torch.tensor(np.asarray(img) / 255.0, dtype=torch.float32).permute(2, 0, 1)[None] - 0.5) / 0.5
    with torch.no_grad():
        top = int(full(x).argmax())
    assert 281 <= top <= 285  # ImageNet's domestic cat classes


def test_other_timm_archs_build_by_name_without_weights():
    m = build_network("resnet18", 5, head="fastai", pretrained=False).eval()
    assert m(torch.zeros(2, 3, 64, 64)).shape == (2, 5)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_weights_holding_nan_or_inf_are_refused_even_with_a_matching_sha(tmp_path, value):
    m = build_network("tf_efficientnet_lite0", 3, pretrained=False)
    with torch.no_grad():
        m.head.fc.bias[1] = value  # what a diverged fp16 run writes: served, it answers "nan% confidence"
    save_artifact(m, ModelSpec(labels=["a", "b", "c"], image_size=64), tmp_path)
    with pytest.raises(ArtifactError, match="head.fc.bias holds NaN or infinite values"):
        load_artifact(tmp_path)


@pytest.mark.parametrize("arch", ["hf-hub:someone/remote-arch", "local-dir:/work", "resnet18.bogus_tag"])
def test_an_arch_that_is_not_a_plain_timm_name_is_an_artifact_error(artifact, arch, monkeypatch):
    d, _ = artifact
    monkeypatch.setattr(artifact_module, "build_network", _no_build)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "arch": arch}))
    with pytest.raises(ArtifactError, match="plain timm model name"):
        load_artifact(d)


def _no_build(*args, **kwargs):
    raise AssertionError("the network was built")


def _meta_only_build(*args, **kwargs):
    # the guard runs before building: a real 7-billion-parameter network would take the machine's memory
    assert torch.get_default_device().type == "meta", "a network was allocated before the weights were checked"
    return build_network(*args, **kwargs)


@pytest.mark.parametrize("arch", ["vit_7b_patch16_dinov3", "resnet18"])
def test_a_wrong_or_huge_arch_fails_on_the_weights_header_before_any_network_is_allocated(artifact, arch, monkeypatch):
    d, _ = artifact
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "arch": arch}))
    monkeypatch.setattr(artifact_module, "build_network", _meta_only_build)
    with pytest.raises(ArtifactError, match=f"does not fit arch '{arch}'"):
        load_artifact(d)


def test_a_weights_shape_mismatch_is_found_from_the_header(artifact, monkeypatch):
    d, _ = artifact
    sd = load_file(str(d / "model.safetensors"))
    sd["body.conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    _rewrite(d, sd)
    monkeypatch.setattr(artifact_module, "build_network", _meta_only_build)
    with pytest.raises(
        ArtifactError, match=r"body.conv_stem.weight has shape \(8, 3, 3, 3\), expected \(32, 3, 3, 3\)"
    ):
        load_artifact(d)


def test_deeply_nested_json_files_are_clear_errors_not_recursion_errors(artifact):
    d, _ = artifact
    (d / "metrics.json").write_text("[" * 100_000)
    assert read_json_object(d / "metrics.json") == {}
    (d / "config.json").write_text("[" * 100_000)
    with pytest.raises(ArtifactError, match="nested too deeply"):
        load_artifact(d)


def test_a_string_venomous_flag_is_an_artifact_error(artifact):
    d, _ = artifact
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "class_info": {"a": {"venomous": "false"}}}))
    with pytest.raises(ArtifactError, match="venomous must be true, false or null"):
        load_artifact(d)


def test_an_arch_whose_features_timm_cannot_unpool_is_a_clear_error():
    with torch.device("meta"), pytest.raises(ValueError, match="cannot give its unpooled features"):
        build_network("efficientvit_b2", 2, pretrained=False)
