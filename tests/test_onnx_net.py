"""The ONNX Runtime forward used for serving and feature extraction: same numbers as PyTorch, any batch size."""

import numpy as np
import pytest
import torch

from snake_model.network import build_network
from snake_model.ood import knn_scores
from snake_model.predictor import OnnxNet


@pytest.mark.parametrize("zoom", [1.0, 0.8])
def test_onnx_net_equals_torch_for_every_batch_size_including_empty(zoom):
    torch.manual_seed(0)
    model = build_network("tf_efficientnet_lite0", 3, pretrained=False, tta_flip=True, tta_zoom=zoom).eval()
    net = OnnxNet(model, 64, threads=1)
    x = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    with torch.inference_mode():
        ref_logits, ref_feats = (t.numpy() for t in model.logits_and_features(torch.from_numpy(x)))
    assert ref_logits.std(0).max() > 1e-4, "outputs must depend on the image, or the comparison proves nothing"
    for n in (1, 3):
        logits, feats = net(x[:n])
        np.testing.assert_allclose(logits, ref_logits[:n], atol=1e-4)
        np.testing.assert_allclose(feats, ref_feats[:n], atol=1e-4)
    logits, feats = net(x[:0])
    assert logits.shape == (0, 3) and feats.shape == (0, model.body.num_features)


def test_knn_score_is_one_minus_the_kth_largest_cosine_similarity():
    rng = np.random.default_rng(1)
    bank = rng.normal(size=(50, 16)).astype(np.float32)
    bank /= np.linalg.norm(bank, axis=1, keepdims=True)
    q = rng.normal(size=(4, 16)).astype(np.float32)
    sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ bank.T
    expected = 1.0 - np.sort(sims, axis=1)[:, ::-1][:, 2]
    np.testing.assert_allclose(knn_scores(q, bank.astype(np.float16), k=3), expected, atol=2e-3)
    np.testing.assert_allclose(knn_scores(q, bank, k=3), expected, atol=1e-5)


def test_extract_features_with_flip_averages_the_image_and_its_mirror(tmp_path):
    from PIL import Image, ImageOps

    from train.features import extract_features

    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    img.save(tmp_path / "a.png")
    ImageOps.mirror(img).save(tmp_path / "b.png")
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    plain, ok = extract_features(paths, image_size=64, progress=False)
    flipped, _ = extract_features(paths, image_size=64, flip=True, progress=False)
    assert ok.all()
    np.testing.assert_allclose(flipped[0], flipped[1], atol=1e-4)  # a photo and its mirror: the same features
    np.testing.assert_allclose(flipped[0], (plain[0] + plain[1]) / 2, atol=1e-4)
    assert np.abs(plain[0] - plain[1]).max() > 1e-2  # without flip they differ, or the test proves nothing


def test_a_feature_cache_that_cannot_be_written_or_read_never_loses_the_features(tmp_path, monkeypatch, caplog):
    from PIL import Image

    import train.features as F

    rng = np.random.default_rng(3)
    paths = []
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    want, _ = F.extract_features(paths, image_size=32, progress=False)
    cache = tmp_path / "cache"

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(F.np, "savez", full)
        got, ok = F.extract_features(paths, image_size=32, progress=False, cache_dir=cache)
    assert ok.all() and np.allclose(got, want, atol=1e-5)
    assert "could not cache the features" in caplog.text and not list(cache.glob("*"))
    F.extract_features(paths, image_size=32, progress=False, cache_dir=cache)  # now it caches
    (cached,) = cache.glob("feats_*.npz")
    cached.write_bytes(b"torn")  # a torn cache file is computed again, not a crash
    got, ok = F.extract_features(paths, image_size=32, progress=False, cache_dir=cache)
    assert ok.all() and np.allclose(got, want, atol=1e-5) and "unreadable" in caplog.text
    again, _ = F.extract_features(paths, image_size=32, progress=False, cache_dir=cache)  # and cached again
    assert np.allclose(again, want, atol=1e-5) and cached.stat().st_size > 100


def test_the_second_view_is_the_mirrored_central_crop_at_full_size():
    model = build_network("tf_efficientnet_lite0", 2, pretrained=False, tta_flip=True, tta_zoom=0.75).eval()
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    crop = x[:, :, 1:7, 1:7]  # 75 % of 8 px: 6 px, starting at 1
    expected = torch.flip(torch.nn.functional.interpolate(crop, size=(8, 8), mode="bilinear"), dims=[3])
    torch.testing.assert_close(model.second_view(x), expected)
    model.tta_zoom = 1.0
    torch.testing.assert_close(model.second_view(x), torch.flip(x, dims=[3]))
    with torch.no_grad():  # two views averaged: the logits are the mean of the two single-view logits
        plain = model.head(model.body(x))
        model.tta_zoom = 0.75
        second = model.head(model.body(model.second_view(x)))
        torch.testing.assert_close(model(x), (plain + second) / 2, atol=1e-5, rtol=1e-5)
