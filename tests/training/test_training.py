import numpy as np
import pytest

from nucleoseg.training.data import PatchSampler, grid_patches, hed_jitter, make_targets


def test_targets_and_sampler_shapes():
    from _helpers import synthetic_nuclei

    img, lab = synthetic_nuclei((80, 80))
    tgt = make_targets(lab)
    assert tgt.shape == (80, 80, 2) and tgt.dtype == np.uint8
    assert (tgt[..., 1] <= tgt[..., 0]).all() and tgt[..., 1].sum() < tgt[..., 0].sum()
    s = PatchSampler([img], [tgt], patch=32, seed=1)
    x, y = s.batch(4)
    assert x.shape == (4, 32, 32, 3) and y.shape == (4, 32, 32, 2)
    assert x.min() >= 0 and x.max() <= 1 and set(np.unique(y)) <= {0.0, 1.0}
    xs, ys = grid_patches(img, tgt, patch=32, per_side=3)
    assert xs.shape == (9, 32, 32, 3)
    with pytest.raises(ValueError, match="smaller"):
        PatchSampler([img], [tgt], patch=128)


def test_hed_jitter_identity_at_zero_strength():
    rng = np.random.default_rng(0)
    x = rng.random((2, 8, 8, 3)).astype(np.float32) * 0.9 + 0.05
    y = hed_jitter(x, rng, sigma=0.0, bias=0.0)
    np.testing.assert_allclose(y, x, atol=2e-3)


def test_few_steps_lower_the_loss_on_real_patches(data_root, tmp_path):
    """A small UNet trained for a few steps on real MoNuSeg patches: the loss goes down,
    the best model is checkpointed atomically, and a stop request ends training."""
    import keras

    from nucleoseg.io.monuseg import list_tiles
    from nucleoseg.models.registry import build
    from nucleoseg.training.train import bce_dice_loss, train

    tiles = list_tiles("fit", data_root)[:2]
    images = [t.image()[:512, :512] for t in tiles]
    targets = [make_targets(t.labels()[:512, :512]) for t in tiles]
    sampler = PatchSampler(images, targets, patch=64, seed=0)
    x, y = PatchSampler(images, targets, patch=64, augment=False, seed=5).batch(8)
    keras.utils.set_random_seed(0)
    model = build("unet", depth=2, base_filters=8, dropout=0.0)
    before = float(bce_dice_loss(y, model.predict_on_batch(x)))
    ckpt = tmp_path / "best.keras"
    res = train(model, sampler, (x, y), epochs=3, steps_per_epoch=8, batch_size=8,
                learning_rate=3e-3, checkpoint=ckpt)
    after = float(bce_dice_loss(y, model.predict_on_batch(x)))
    assert after < before - 0.05, (before, after)
    assert ckpt.is_file() and res.epochs_run == 3 and not res.cancelled
    assert not list(tmp_path.glob(".best.*"))  # no temporary files left
    steps = []
    res = train(model, sampler, (x, y), epochs=3, steps_per_epoch=8, batch_size=8,
                progress=lambda s, t, logs: steps.append(s), should_stop=lambda: len(steps) >= 2)
    assert res.cancelled and len(steps) == 2
