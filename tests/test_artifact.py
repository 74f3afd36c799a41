"""The artifact contract: strict loading, clear errors, and the offline ImageNet backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from snake_model.artifact import ArtifactError, load_artifact, save_artifact, sha256_file
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
