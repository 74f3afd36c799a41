"""Temperature scaling, ECE and the abstain decision."""

from __future__ import annotations

import json

import numpy as np
import pytest

from snake_model.artifact import ArtifactError, save_artifact
from snake_model.network import build_network
from snake_model.ood import choose_threshold, knn_scores, make_bank
from snake_model.predictor import Predictor, softmax
from snake_model.spec import ModelSpec
from train import metrics as M


def test_temperature_fitting_lowers_nll_on_an_overconfident_model():
    rng = np.random.default_rng(0)
    n, c = 2000, 4
    y = rng.integers(0, c, n)
    true_logits = rng.normal(0, 1, (n, c))
    true_logits[np.arange(n), y] += 1.5
    # sample labels from the calibrated model, then make it 4x overconfident
    p = softmax(true_logits)
    y = np.array([rng.choice(c, p=row) for row in p])
    logits = true_logits * 4
    t = M.fit_temperature(logits, y)
    assert 3.0 < t < 5.5
    assert M.nll(logits, y, t) < M.nll(logits, y) - 0.3
    assert M.ece(softmax(logits, t), y) < M.ece(softmax(logits), y) / 2


def test_ece_of_a_perfectly_calibrated_toy_case_is_zero_and_of_an_overconfident_one_is_not():
    probs = np.array([[0.75, 0.25]] * 4)
    assert M.ece(probs, np.array([0, 0, 0, 1])) == pytest.approx(0.0)
    assert M.ece(probs, np.array([1, 1, 0, 1])) == pytest.approx(0.5)


def test_knn_score_is_zero_for_a_training_image_and_large_for_an_unrelated_one():
    rng = np.random.default_rng(1)
    train = np.abs(rng.normal(0, 1, (50, 16))) + np.eye(16)[0] * 5
    bank = make_bank(train)
    s = knn_scores(np.vstack([train[:1], -train[:1]]), bank, k=1)
    assert s[0] == pytest.approx(0.0, abs=1e-3) and s[1] > 1.0


def test_threshold_keeps_the_false_abstain_rate_at_most_the_target():
    scores = np.linspace(0, 1, 101)
    t = choose_threshold(scores, 0.05)
    assert (scores > t).mean() <= 0.05 and (scores > t - 0.011).mean() > 0.05


@pytest.fixture
def knn_artifact(tmp_path):
    m = build_network("tf_efficientnet_lite0", 2, pretrained=False)
    rng = np.random.default_rng(2)
    save_artifact(
        m,
        ModelSpec(labels=["a", "b"], image_size=48, ood={"k": 1}),
        tmp_path,
        ood_bank=make_bank(rng.normal(0, 1, (20, m.body.num_features))),
    )
    return tmp_path


def test_the_abstain_decision_flips_at_the_stored_threshold(knn_artifact):
    from PIL import Image

    img = Image.new("RGB", (60, 40), (10, 200, 30))
    score = Predictor(knn_artifact).predict(img).ood_score
    cfg = json.loads((knn_artifact / "config.json").read_text())
    for thr, expected in ((score - 1e-4, True), (score + 1e-4, False)):
        cfg["abstain_threshold"] = thr
        (knn_artifact / "config.json").write_text(json.dumps(cfg))
        pred = Predictor(knn_artifact, backend="torch").predict(img)
        assert pred.abstain is expected and pred.ood_score == pytest.approx(score, abs=1e-5)


def test_a_tampered_feature_bank_is_refused(knn_artifact):
    f = knn_artifact / "ood.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="feature bank"):
        Predictor(knn_artifact)


def test_ece_noise_floor_is_what_a_perfectly_calibrated_model_shows_and_shrinks_with_more_images():
    from train.metrics import ece, ece_noise_floor

    rng = np.random.default_rng(0)
    small = rng.dirichlet([2, 1, 1, 1], size=150)
    large = rng.dirichlet([2, 1, 1, 1], size=6000)
    floor_small, floor_large = ece_noise_floor(small), ece_noise_floor(large)
    assert 0.02 < floor_small < 0.15
    assert floor_large < floor_small / 3
    # labels drawn from the probabilities themselves: the measured ECE scatters around the floor
    cum = np.cumsum(small, axis=1)
    seen = []
    for s in range(40):
        u = np.random.default_rng(100 + s).random((len(small), 1))
        seen.append(ece(small, np.minimum((u > cum).sum(1), 3)))
    assert abs(np.mean(seen) - floor_small) < 0.01
    # a miscalibrated model (labels independent of the confidences) is far above the floor
    assert ece(small, rng.integers(0, 4, len(small))) > floor_small + 0.1


def test_temperature_pools_the_out_of_fold_training_logits_with_the_validation_ones():
    from train.fit import calibration_temperature

    rng = np.random.default_rng(1)
    c = 4

    def sample(n, scale):
        true = rng.normal(0, 1, (n, c))
        true[np.arange(n), rng.integers(0, c, n)] += 1.5
        y = np.array([rng.choice(c, p=row) for row in softmax(true)])
        return true * scale, y

    valid, yv = sample(150, 3.0)  # a small, 3x overconfident validation split
    oof, yo = sample(3000, 1.0)  # many calibrated out-of-fold rows
    t_valid, on_valid = calibration_temperature(valid, yv, {})
    assert on_valid == {"valid": 150} and t_valid == pytest.approx(M.fit_temperature(valid, yv))
    t, on = calibration_temperature(valid, yv, {"oof_logits": oof, "oof_y": yo})
    assert on == {"valid": 150, "out_of_fold_train": 3000}
    assert t == pytest.approx(M.fit_temperature(np.concatenate([valid, oof]), np.concatenate([yv, yo])))
    assert t_valid > 2.0 and 1.0 < t < t_valid - 0.5  # pulled towards the many calibrated rows


def test_per_class_metrics_of_a_class_without_images_are_undefined_not_zero():
    # rows = actual a, b, c; c has no images (support 0) and nothing was predicted as c
    cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    per = M.per_class(cm, ["a", "b", "c"], undefined=None)
    assert per["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert per["a"]["recall"] == pytest.approx(0.75) and per["b"]["precision"] == pytest.approx(2 / 3)
    assert M.macro_f1(per) == pytest.approx((per["a"]["f1"] + per["b"]["f1"]) / 2)  # c left out
    json.dumps(per)  # null in metrics.json
    # something predicted as a class without images: its precision is defined (0), its recall and F1 are not
    per = M.per_class(np.array([[3, 1], [0, 0]]), ["a", "b"], undefined=None)
    assert per["b"] == {"precision": 0.0, "recall": None, "f1": None, "support": 0}
    # a class with images that is never predicted scores 0, and the default keeps 0 for undefined values
    assert M.per_class(np.array([[2, 0], [1, 0]]), ["a", "b"], undefined=None)["b"]["f1"] == 0.0
    assert M.per_class(cm, ["a", "b", "c"])["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
