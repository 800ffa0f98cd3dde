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


def test_strong_augmentation_and_balanced_groups():
    """The multi-lab recipe: every augmentation runs and keeps shapes/ranges, targets stay
    binary after zoom, the default recipe is the old one draw for draw, and groups are drawn
    equally often whatever their sizes."""
    from _helpers import synthetic_nuclei
    from nucleoseg.training.data import STRONG_AUGMENTATION, Augmentation

    img, lab = synthetic_nuclei((120, 120), n=10)
    tgt = make_targets(lab)
    always = Augmentation(hed_sigma=0.12, saturation=0.3, blur_p=1.0, jpeg_p=1.0,
                          scale=(0.8, 1.25))
    x, y = PatchSampler([img], [tgt], patch=64, seed=3, augmentation=always).batch(6)
    assert x.shape == (6, 64, 64, 3) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1 and set(np.unique(y)) <= {0.0, 1.0}
    plain, _ = PatchSampler([img], [tgt], patch=64, seed=3, augment=False).batch(6)
    assert not np.allclose(x, plain)
    # the default Augmentation reproduces the earlier sampler exactly
    a = PatchSampler([img], [tgt], patch=64, seed=7).batch(4)
    b = PatchSampler([img], [tgt], patch=64, seed=7, augmentation=Augmentation()).batch(4)
    np.testing.assert_array_equal(a[0], b[0])
    assert STRONG_AUGMENTATION.hed_sigma > Augmentation().hed_sigma
    # a big group and a small one are drawn equally often
    big, small = np.zeros((400, 400, 3), np.uint8), np.full((100, 100, 3), 255, np.uint8)
    tb, ts = np.zeros((400, 400, 2), np.uint8), np.zeros((100, 100, 2), np.uint8)
    s = PatchSampler([big, big, small], [tb, tb, ts], patch=32, augment=False, groups=[0, 0, 1])
    x, _ = s.batch(400)
    share = float((x.mean(axis=(1, 2, 3)) > 0.5).mean())
    assert 0.4 < share < 0.6, share
    with pytest.raises(ValueError, match="one group per image"):
        PatchSampler([big], [tb], patch=32, groups=[0, 1])


def test_cosine_schedule_and_bfloat16_training(tmp_path):
    """``schedule="cosine"`` decays the rate to ~0 over all steps and runs every epoch;
    training a bfloat16 copy moves the float32 model's weights when copied back."""
    import keras

    from _helpers import synthetic_nuclei
    from nucleoseg.models.precision import with_precision
    from nucleoseg.models.registry import build
    from nucleoseg.training.train import train

    img, lab = synthetic_nuclei((96, 96), n=8)
    sampler = PatchSampler([img], [make_targets(lab)], patch=32, seed=0)
    keras.utils.set_random_seed(0)
    model = build("unet", depth=2, base_filters=4, dropout=0.0)
    before = [w.copy() for w in model.get_weights()]
    mixed = with_precision(model, "bfloat16")
    res = train(mixed, sampler, None, epochs=2, steps_per_epoch=3, batch_size=2,
                learning_rate=1e-2, schedule="cosine", early_stopping_patience=0)
    assert res.epochs_run == 2
    lr = mixed.optimizer.learning_rate
    assert float(lr) < 1e-6  # decayed to ~0 after epochs * steps
    model.set_weights(mixed.get_weights())
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    with pytest.raises(ValueError, match="schedule"):
        train(model, sampler, None, epochs=1, steps_per_epoch=1, schedule="step")
    # monitoring validation Dice keeps the epoch where it was highest
    val = PatchSampler([img], [make_targets(lab)], patch=32, augment=False, seed=9).batch(4)
    res = train(model, sampler, val, epochs=3, steps_per_epoch=2, batch_size=2,
                learning_rate=1e-2, schedule="cosine", monitor="val_nucleus_dice")
    dice = res.history["val_nucleus_dice"]
    assert res.best_epoch == int(np.argmax(dice)) and res.epochs_run == 3


def test_contact_zone_marks_where_nuclei_touch_and_the_loss_weights_it():
    """Two touching nuclei get a contact band around their shared border; a lone nucleus
    none. The contact loss equals the plain one without contacts, and grows when the
    interior is predicted across the band (what merges touching nuclei)."""
    from nucleoseg.training.data import contact_zone
    from nucleoseg.training.train import CONTACT_WEIGHT, bce_dice_contact_loss, bce_dice_loss

    lab = np.zeros((20, 30), np.int32)
    lab[4:12, 2:8] = 1
    lab[4:12, 8:14] = 2  # shares the border between columns 7 and 8
    lab[4:12, 22:28] = 3  # alone
    zone = contact_zone(lab, radius=2)
    cols = np.flatnonzero(zone.any(0))
    assert cols.min() == 6 and cols.max() == 9  # 2 px either side of the shared border
    assert not zone[:, 15:].any() and not zone[:2].any()
    tgt = make_targets(lab, contact=True)
    assert tgt.shape == (20, 30, 3) and (tgt[..., 2] == zone).all()
    assert not (tgt[..., 1] & tgt[..., 2]).any()  # the interior target is 0 on the band
    np.testing.assert_array_equal(make_targets(lab)[..., :2], tgt[..., :2])

    y = tgt[None].astype(np.float32)
    exact = np.clip(y[..., :2], 0.05, 0.95)
    plain = float(bce_dice_loss(y[..., :2], exact))
    no_contact = y.copy()
    no_contact[..., 2] = 0
    assert float(bce_dice_contact_loss(no_contact, exact)) == pytest.approx(plain, rel=1e-5)
    assert float(bce_dice_contact_loss(y, exact)) > plain  # a small penalty from clipping
    bridged = exact.copy()
    bridged[0, 6:10, 6:10, 1] = 0.95  # interior predicted across the contact
    gap = float(bce_dice_contact_loss(y, bridged)) - float(bce_dice_loss(y[..., :2], bridged))
    assert gap > CONTACT_WEIGHT * 16 * np.log(20) / y[..., 0].size * 0.99
    # the weight scales only the contact term (--contact-weight)
    from nucleoseg.training.train import contact_loss

    half = float(contact_loss(CONTACT_WEIGHT / 2)(y, bridged)) - float(
        bce_dice_loss(y[..., :2], bridged))
    assert half == pytest.approx(gap / 2, rel=1e-4)
    with pytest.raises(ValueError, match="positive"):
        contact_loss(0)
