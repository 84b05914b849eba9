"""PixelWeightedCELoss: plain cross-entropy at unit weights, linear in the weight map, the weight from the target,
the Dice term, gradients, shape checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from unet_monai.losses import PixelWeightedCELoss

SPATIAL = {"2d": (6, 5), "3d": (4, 3, 5)}


def batch(case: str, channels: int = 3, batch_size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(B, C, *S)`` and class indices ``(B, 1, *S)`` (float, as a label channel comes from a loader);
    for one channel the target is binary."""
    spatial = SPATIAL[case]
    logits = torch.randn(batch_size, channels, *spatial)
    target = torch.randint(0, max(channels, 2), (batch_size, 1, *spatial)).float()
    return logits, target


@pytest.mark.parametrize("case", list(SPATIAL), ids=list(SPATIAL))
@pytest.mark.parametrize("weight", ["ones", "none"], ids=["ones", "none"])
def test_unit_weight_is_softmax_cross_entropy(case, weight):
    logits, target = batch(case)
    w = torch.ones_like(target) if weight == "ones" else None
    loss = PixelWeightedCELoss()(logits, target, w)
    torch.testing.assert_close(loss, F.cross_entropy(logits, target[:, 0].long()))


@pytest.mark.parametrize("case", list(SPATIAL), ids=list(SPATIAL))
@pytest.mark.parametrize("weight", ["ones", "none"], ids=["ones", "none"])
def test_unit_weight_one_channel_is_binary_cross_entropy(case, weight):
    logits, target = batch(case, channels=1)
    w = torch.ones_like(target) if weight == "ones" else None
    loss = PixelWeightedCELoss()(logits, target, w)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits, target))


@pytest.mark.parametrize("channels", [3, 1], ids=["softmax", "sigmoid"])
def test_weight_two_doubles_the_loss(channels):
    logits, target = batch("2d", channels)
    loss = PixelWeightedCELoss()
    torch.testing.assert_close(loss(logits, target, torch.full_like(target, 2.0)), 2 * loss(logits, target))


@pytest.mark.parametrize("channels", [3, 1], ids=["softmax", "sigmoid"])
def test_loss_is_mean_of_weighted_per_voxel_loss(channels):
    logits, target = batch("3d", channels)
    weight = torch.rand_like(target) * 5
    if channels == 1:
        per_voxel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    else:
        per_voxel = F.cross_entropy(logits, target[:, 0].long(), reduction="none")[:, None]
    torch.testing.assert_close(PixelWeightedCELoss()(logits, target, weight), (weight * per_voxel).mean())


@pytest.mark.parametrize("channels", [3, 1], ids=["softmax", "sigmoid"])
def test_zero_weight_removes_voxel_contribution(channels):
    logits, target = batch("2d", channels)
    weight = torch.ones_like(target)
    weight[1, 0, 2, 3] = 0.0
    loss = PixelWeightedCELoss()
    before = loss(logits, target, weight)
    changed = logits.clone()
    changed[1, :, 2, 3] = torch.randn(channels) * 10
    other = target.clone()
    other[1, 0, 2, 3] = (other[1, 0, 2, 3] + 1) % max(channels, 2)
    torch.testing.assert_close(loss(changed, other, weight), before)
    logits.requires_grad_(True)
    loss(logits, target, weight).backward()
    assert torch.equal(logits.grad[1, :, 2, 3], torch.zeros(channels))


@pytest.mark.parametrize("channels", [3, 1], ids=["softmax", "sigmoid"])
def test_weight_in_target_equals_explicit_weight(channels):
    logits, target = batch("2d", channels)
    weight = torch.rand_like(target) + 0.5
    stacked = torch.cat([target, weight], dim=1)
    from_target = PixelWeightedCELoss(weight_in_target=True)(logits, stacked)
    torch.testing.assert_close(from_target, PixelWeightedCELoss()(logits, target, weight))


def test_explicit_weight_takes_precedence_over_weight_in_target():
    logits, target = batch("2d")
    weight = torch.rand_like(target) + 0.5
    loss = PixelWeightedCELoss(weight_in_target=True)(logits, target, weight)
    torch.testing.assert_close(loss, PixelWeightedCELoss()(logits, target, weight))


@pytest.mark.parametrize("channels", [3, 1], ids=["softmax", "sigmoid"])
def test_lambda_dice_adds_monai_dice_loss(channels):
    logits, target = batch("2d", channels)
    weight = torch.rand_like(target) + 0.5
    dice = DiceLoss(to_onehot_y=True, softmax=True) if channels > 1 else DiceLoss(sigmoid=True)
    expected = PixelWeightedCELoss()(logits, target, weight) + 0.7 * dice(logits, target)
    torch.testing.assert_close(PixelWeightedCELoss(lambda_dice=0.7)(logits, target, weight), expected)


def test_dice_without_background_is_monai_dice_over_the_foreground_classes():
    logits, target = batch("3d", 3)
    weight = torch.rand_like(target) + 0.5
    dice = DiceLoss(include_background=False, to_onehot_y=True, softmax=True)
    expected = PixelWeightedCELoss()(logits, target, weight) + dice(logits, target)
    loss_fn = PixelWeightedCELoss(lambda_dice=1.0, dice_include_background=False)
    torch.testing.assert_close(loss_fn(logits, target, weight), expected)
    assert not torch.allclose(expected, PixelWeightedCELoss(lambda_dice=1.0)(logits, target, weight))


def test_half_precision_logits_give_float32_loss():
    logits, target = batch("2d")
    loss = PixelWeightedCELoss()(logits.bfloat16(), target)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, F.cross_entropy(logits.bfloat16().float(), target[:, 0].long()))


GRADIENT_CASES = {
    "softmax": (3, {}, False),
    "sigmoid": (1, {}, False),
    "softmax-dice": (3, {"lambda_dice": 1.0}, False),
    "sigmoid-dice": (1, {"lambda_dice": 1.0}, False),
    "weight_in_target": (3, {"weight_in_target": True}, True),
    "weight_in_target-dice": (2, {"weight_in_target": True, "lambda_dice": 0.5}, True),
}


@pytest.mark.parametrize("case", list(GRADIENT_CASES), ids=list(GRADIENT_CASES))
def test_gradient_reaches_the_logits(case):
    channels, kwargs, in_target = GRADIENT_CASES[case]
    logits, target = batch("3d", channels)
    logits.requires_grad_(True)
    weight = torch.rand_like(target) * 3 + 0.1
    loss_fn = PixelWeightedCELoss(**kwargs)
    loss = loss_fn(logits, torch.cat([target, weight], 1)) if in_target else loss_fn(logits, target, weight)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(logits.grad).all()
    assert logits.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------- shape checks
@pytest.mark.parametrize(
    "target_shape,weight_shape,match",
    [
        ((2, 2, 6, 5), None, r"target must be \(B, 1, \*S\) matching input \(2, 3, 6, 5\), got \(2, 2, 6, 5\)"),
        ((2, 1, 6, 4), None, r"target must be \(B, 1, \*S\) matching input .* got \(2, 1, 6, 4\)"),
        ((1, 1, 6, 5), None, r"target must be \(B, 1, \*S\) matching input .* got \(1, 1, 6, 5\)"),
        ((2, 1, 6, 5), (2, 1, 5, 6), r"weight must have the target's shape \(2, 1, 6, 5\), got \(2, 1, 5, 6\)"),
        ((2, 1, 6, 5), (2, 3, 6, 5), r"weight must have the target's shape \(2, 1, 6, 5\), got \(2, 3, 6, 5\)"),
    ],
    ids=["target_channels", "target_spatial", "target_batch", "weight_spatial", "weight_channels"],
)
def test_wrong_shapes_rejected(target_shape, weight_shape, match):
    logits = torch.randn(2, 3, 6, 5)
    weight = torch.ones(weight_shape) if weight_shape is not None else None
    with pytest.raises(ValueError, match=match):
        PixelWeightedCELoss()(logits, torch.zeros(target_shape), weight)


def test_weight_in_target_needs_two_target_channels():
    with pytest.raises(ValueError, match=r"target must be \(B, 2, \*S\) = \(label, weight\), got shape \(2, 1, 6, 5\)"):
        PixelWeightedCELoss(weight_in_target=True)(torch.randn(2, 3, 6, 5), torch.zeros(2, 1, 6, 5))


def test_negative_lambda_dice_rejected():
    with pytest.raises(ValueError, match="lambda_dice must be >= 0, got -0.5"):
        PixelWeightedCELoss(lambda_dice=-0.5)


# ------------------------------------------------------------------------------------------- ignore value
IGNORE = 255


def sparse_batch(channels: int, batch_size: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3D logits and targets with about half the voxels set to the ignore value; also the labelled mask."""
    logits, target = batch("3d", channels, batch_size)
    labelled = torch.rand_like(target) < 0.5
    labelled[0, 0, 0, 0, 0] = True  # every sample keeps a labelled voxel
    labelled[-1, 0, 0, 0, 1] = True
    return logits, torch.where(labelled, target, torch.full_like(target, IGNORE)), labelled


def reference_on_labelled(logits, target, labelled, weight, lambda_dice, include_background=True):
    """The loss recomputed from the gathered labelled voxels only: weighted CE (BCE) mean over them, plus MONAI's
    Dice of each sample's labelled voxels ``(1, C, n_b)``, averaged over the samples that have any."""
    channels = logits.shape[1]
    keep = labelled[:, 0]  # (B, *S)
    x = logits.movedim(1, -1)[keep]  # (N, C)
    t = target[:, 0][keep]  # (N,)
    w = weight[:, 0][keep] if weight is not None else torch.ones_like(t)
    if channels == 1:
        ce = F.binary_cross_entropy_with_logits(x[:, 0], t, reduction="none")
    else:
        ce = F.cross_entropy(x, t.long(), reduction="none")
    loss = (w * ce).mean()
    if lambda_dice:
        if channels > 1:
            dice = DiceLoss(include_background=include_background, to_onehot_y=True, softmax=True)
        else:
            dice = DiceLoss(sigmoid=True)
        per_sample = []
        for b in range(logits.shape[0]):
            if keep[b].any():
                xb = logits[b].flatten(1)[:, keep[b].flatten()][None]  # (1, C, n_b)
                tb = target[b].flatten(1)[:, keep[b].flatten()][None]  # (1, 1, n_b)
                per_sample.append(dice(xb, tb))
        loss = loss + lambda_dice * torch.stack(per_sample).mean()
    return loss


IGNORE_CASES = {
    "softmax": (3, 0.0, "explicit"),
    "sigmoid": (1, 0.0, "explicit"),
    "softmax-dice": (3, 0.7, "explicit"),
    "sigmoid-dice": (1, 0.7, "explicit"),
    "no-weight-dice": (3, 1.0, "none"),
    "weight_in_target-dice": (2, 0.5, "in_target"),
}


def call(loss_fn, logits, target, weight, mode):
    if mode == "in_target":
        return loss_fn(logits, torch.cat([target, weight], 1))
    return loss_fn(logits, target, weight if mode == "explicit" else None)


@pytest.mark.parametrize("case", list(IGNORE_CASES), ids=list(IGNORE_CASES))
def test_ignore_index_loss_equals_loss_on_labelled_voxels(case):
    channels, lambda_dice, mode = IGNORE_CASES[case]
    logits, target, labelled = sparse_batch(channels)
    weight = torch.rand_like(target) * 3 + 0.1
    loss_fn = PixelWeightedCELoss(lambda_dice=lambda_dice, weight_in_target=mode == "in_target", ignore_index=IGNORE)
    expected = reference_on_labelled(logits, target, labelled, weight if mode != "none" else None, lambda_dice)
    torch.testing.assert_close(call(loss_fn, logits, target, weight, mode), expected)


@pytest.mark.parametrize("case", list(IGNORE_CASES), ids=list(IGNORE_CASES))
def test_ignore_index_gradient_is_zero_at_ignored_voxels(case):
    channels, lambda_dice, mode = IGNORE_CASES[case]
    logits, target, labelled = sparse_batch(channels)
    logits.requires_grad_(True)
    weight = torch.rand_like(target) * 3 + 0.1
    loss_fn = PixelWeightedCELoss(lambda_dice=lambda_dice, weight_in_target=mode == "in_target", ignore_index=IGNORE)
    call(loss_fn, logits, target, weight, mode).backward()
    ignored = (~labelled).expand_as(logits)
    assert torch.equal(logits.grad[ignored], torch.zeros(int(ignored.sum())))
    assert (logits.grad[~ignored] != 0).any()


@pytest.mark.parametrize("channels", [3, 1], ids=["softmax", "sigmoid"])
def test_ignored_voxels_do_not_change_the_loss(channels):
    logits, target, labelled = sparse_batch(channels)
    loss_fn = PixelWeightedCELoss(lambda_dice=1.0, ignore_index=IGNORE)
    changed = torch.where(labelled, logits, torch.randn_like(logits) * 100)
    torch.testing.assert_close(loss_fn(changed, target), loss_fn(logits, target))


def test_dice_without_background_ignores_unlabelled_voxels():
    logits, target, labelled = sparse_batch(3)
    logits.requires_grad_(True)
    loss_fn = PixelWeightedCELoss(lambda_dice=1.0, ignore_index=IGNORE, dice_include_background=False)
    loss = loss_fn(logits, target)
    loss.backward()
    expected = reference_on_labelled(logits.detach(), target, labelled, None, 1.0, include_background=False)
    torch.testing.assert_close(loss.detach(), expected)
    ignored = (~labelled).expand_as(logits)
    assert torch.equal(logits.grad[ignored], torch.zeros(int(ignored.sum())))


@pytest.mark.parametrize("channels", [3, 1], ids=["softmax", "sigmoid"])
def test_batch_without_labelled_voxels_gives_zero_loss_and_gradient(channels):
    logits, target = batch("3d", channels)
    logits.requires_grad_(True)
    loss = PixelWeightedCELoss(lambda_dice=1.0, ignore_index=IGNORE)(logits, torch.full_like(target, IGNORE))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_sample_without_labelled_voxels_is_left_out_of_the_dice_mean():
    logits, target, labelled = sparse_batch(3)
    target[1] = IGNORE
    labelled[1] = False
    loss = PixelWeightedCELoss(lambda_dice=1.0, ignore_index=IGNORE)(logits, target)
    torch.testing.assert_close(loss, reference_on_labelled(logits, target, labelled, None, 1.0))
    alone = PixelWeightedCELoss(lambda_dice=1.0, ignore_index=IGNORE)(logits[:1], target[:1])
    torch.testing.assert_close(loss, alone)


@pytest.mark.parametrize("channels", [3, 1], ids=["softmax", "sigmoid"])
def test_ignore_index_without_ignored_voxels_is_the_plain_loss(channels):
    logits, target = batch("3d", channels)
    weight = torch.rand_like(target) + 0.5
    plain = PixelWeightedCELoss(lambda_dice=0.5)(logits, target, weight)
    torch.testing.assert_close(PixelWeightedCELoss(lambda_dice=0.5, ignore_index=IGNORE)(logits, target, weight), plain)


def test_ignore_index_with_bf16_logits_in_target_mode():
    logits, target, labelled = sparse_batch(3)
    weight = torch.rand_like(target) + 0.5
    half = logits.bfloat16().requires_grad_(True)
    loss_fn = PixelWeightedCELoss(lambda_dice=0.5, weight_in_target=True, ignore_index=IGNORE)
    loss = loss_fn(half, torch.cat([target, weight], 1).bfloat16())
    assert loss.dtype == torch.float32
    expected = reference_on_labelled(half.detach().float(), target, labelled, weight.bfloat16().float(), 0.5)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert half.grad.dtype == torch.bfloat16
    assert torch.equal(half.grad[(~labelled).expand_as(half)].float(), torch.zeros(int((~labelled).sum()) * 3))


def test_negative_ignore_index():
    logits, target, labelled = sparse_batch(3)
    target = torch.where(labelled, target, torch.full_like(target, -1))
    loss = PixelWeightedCELoss(lambda_dice=1.0, ignore_index=-1)(logits, target)
    torch.testing.assert_close(loss, reference_on_labelled(logits, target, labelled, None, 1.0))


@pytest.mark.parametrize("channels,ignore_index", [(3, 2), (1, 1), (1, 0)], ids=["softmax-class", "sigmoid-1", "bg"])
def test_ignore_index_that_is_a_class_rejected(channels, ignore_index):
    logits, target = batch("2d", channels)
    with pytest.raises(ValueError, match=rf"ignore_index must not be a class of the {channels}-channel logits"):
        PixelWeightedCELoss(ignore_index=ignore_index)(logits, target)


@pytest.mark.parametrize("value", [255.0, True, "255"], ids=["float", "bool", "str"])
def test_ignore_index_must_be_an_integer(value):
    with pytest.raises(TypeError, match="ignore_index must be an integer label value or None"):
        PixelWeightedCELoss(ignore_index=value)


def test_a_sparse_label_with_one_annotated_slice_trains():
    """A small 3D net fitted to one annotated slice (every other voxel the ignore value) segments the unannotated
    voxels (robust over torch seeds 0-11 when written)."""
    from monai.data import create_test_image_3d
    from monai.metrics import compute_dice

    from unet_monai.data import sparsify_label

    image, dense = create_test_image_3d(
        24,
        24,
        24,
        num_objs=4,
        rad_max=6,
        rad_min=3,
        noise_max=0.3,
        num_seg_classes=1,
        random_state=np.random.RandomState(0),
    )
    sparse = sparsify_label(dense.astype(np.uint8), 1, axes=(2,))  # one z slice annotated
    annotated = sparse != IGNORE
    assert annotated.sum() == 24 * 24 and (sparse == 1).any()
    x = torch.as_tensor(image, dtype=torch.float32)[None, None]  # (1, 1, 24, 24, 24)
    target = torch.as_tensor(sparse, dtype=torch.float32)[None, None]
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3, padding=1), torch.nn.LeakyReLU(0.1), torch.nn.Conv3d(8, 2, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    loss_fn = PixelWeightedCELoss(lambda_dice=1.0, ignore_index=IGNORE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small convolutions: threads only contend on the shared cores
    try:
        losses = []
        for _ in range(60):
            optimizer.zero_grad()
            loss = loss_fn(net(x), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        with torch.no_grad():
            pred = net(x).argmax(1)[0]  # (24, 24, 24)
    finally:
        torch.set_num_threads(threads)
    assert losses[-1] < 0.1 * losses[0]
    unseen = torch.as_tensor(~annotated)
    truth = torch.as_tensor(dense > 0)
    dice = compute_dice((pred.bool() & unseen)[None, None].float(), (truth & unseen)[None, None].float())
    assert dice.item() > 0.9
