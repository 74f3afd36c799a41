"""Pieces of the default (fast) recipe: augmented training views and the cross-validated linear head."""

import numpy as np
from PIL import Image

from train.recipe_fast import FAST, fit_linear_head, random_resized_crop


def test_random_resized_crop_keeps_scale_and_aspect_and_is_seeded():
    img = Image.new("RGB", (400, 300))
    for seed in range(30):
        a = random_resized_crop(img, np.random.default_rng(seed), (0.35, 1.0))
        b = random_resized_crop(img, np.random.default_rng(seed), (0.35, 1.0))
        assert a.size == b.size
        w, h = a.size
        assert 0.33 <= w * h / (400 * 300) <= 1.0
        assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02


def test_linear_head_scores_only_plain_rows_and_keeps_an_images_views_in_one_fold():
    rng = np.random.default_rng(0)
    n, d, views = 60, 8, 3
    y = np.arange(n) % 3
    centres = rng.normal(size=(3, d)) * 1.5
    plain = centres[y] + rng.normal(size=(n, d))
    aug = np.repeat(plain, views, axis=0) + 0.01 * rng.normal(size=(n * views, d))  # near copies
    x = np.concatenate([plain, aug])
    yy = np.concatenate([y, np.repeat(y, views)])
    groups = np.concatenate([np.arange(n), np.repeat(np.arange(n), views)])
    scored = np.arange(len(yy)) < n
    w, b, log = fit_linear_head(x, yy, groups, 3, seed=0, scored=scored)
    assert w.shape == (3, d) and b.shape == (3,)
    assert log["C"] in FAST["Cs"] and set(log["cv_log_loss"]) == set(FAST["Cs"])
    oof = log["oof_probs"]
    assert oof.shape == (n, 3)
    np.testing.assert_allclose(oof.sum(1), 1.0, atol=1e-6)
    # with the near copies in other folds, out-of-fold predictions would be almost perfect (leakage); with
    # groups they are honest, so some plain rows are predicted with clearly less than full confidence
    assert oof[np.arange(n), y].min() < 0.9
    # same data, views grouped wrongly (each row its own group): the leak makes the out-of-fold fit look better
    _, _, leaky = fit_linear_head(x, yy, np.arange(len(yy)), 3, seed=0, scored=scored)
    assert leaky["cv_log_loss"][log["C"]] < log["cv_log_loss"][log["C"]]
