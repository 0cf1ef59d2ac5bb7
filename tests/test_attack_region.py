"""The refacing attack's training beyond the paper's recipe: the region it generates (from the
defaced image alone), the weighted x0 loss, and the stage batches of AttackTraining."""

from dataclasses import asdict

import numpy as np
import pytest
import torch
from scipy import ndimage
from synthetic import sphere_head
from torch import nn

from defaceaudit.config import validate_config
from defaceaudit.errors import InputError
from defaceaudit.reface.cascade import (
    AttackTraining,
    PairSet,
    mask_channel,
    stage1_batches,
    stage2_batches,
)
from defaceaudit.reface.region import (
    attack_region,
    envelope_needed,
    remaining_head,
    removed_tissue_distances,
)
from defaceaudit.reface.schedule import DiffusionSchedule
from defaceaudit.reface.volumes import downsample

SPACING = (4.0, 4.0, 4.0)

# -- the attack region ---------------------------------------------------------------------


def test_region_is_the_zero_voxels_within_the_envelope_of_what_is_left():
    original, defaced, cap = sphere_head()  # radius 6 voxels (24 mm), centre (10, 10, 8)
    assert np.array_equal(remaining_head(defaced, SPACING), (original > 0) & ~cap)
    region = attack_region(defaced, SPACING, 20.0)
    assert not (region & (defaced != 0)).any()
    assert region[cap].all()  # the cap is 4 voxels deep: 16 mm from the rest of the ball
    # beside the ball (+X from its outermost voxel (16, 10, 8)) the distance is k voxels x 4 mm
    assert region[17:20, 10, 8].all()  # 4, 8 and 12 mm
    near = attack_region(defaced, SPACING, 10.0)
    assert near[17, 10, 8] and near[18, 10, 8] and not near[19, 10, 8]  # 4, 8; 12 mm
    assert not region[0, 0, 0]  # a corner, 51 mm away
    # the region is every zero voxel within 20 mm of the remaining head, air included
    distance = ndimage.distance_transform_edt((original == 0) | cap, sampling=SPACING)
    assert np.array_equal(region, (defaced == 0) & (distance <= 20.0))
    assert not near[10, 16, 8] and near[10, 13, 8]  # the cap's tip: 16 mm; its base: 4 mm
    assert (region & (original == 0)).any()
    with_inf = attack_region(defaced, SPACING, float("inf"))
    assert np.array_equal(with_inf, defaced == 0)


def test_region_does_not_depend_on_the_original():
    """Two originals that one defacer makes into the same defaced image (a nose, or none, in
    the removed cap) give one region: the removed tissue's silhouette is not traced."""
    original, defaced, cap = sphere_head()
    nosed = original.copy()
    nosed[9:12, 17:19, 7:10] = 100.0  # a nose in front of the ball, inside the zeroed box
    box = (slice(None), slice(13, None), slice(None))
    defaced_a, defaced_b = original.copy(), nosed.copy()
    defaced_a[box] = 0
    defaced_b[box] = 0
    assert np.array_equal(defaced_a, defaced_b)
    removed_a, removed_b = (defaced_a == 0) & (original > 0), (defaced_b == 0) & (nosed > 0)
    assert not np.array_equal(removed_a, removed_b)
    region = attack_region(defaced_a, SPACING, 30.0)
    assert np.array_equal(region, attack_region(defaced_b, SPACING, 30.0))
    assert region[removed_a | removed_b].all()


def test_envelope_needed_on_known_distances():
    # the 99.5th percentile of 0.1..20 mm is 19.9 mm; + 5 mm margin, rounded up to 5 mm: 25
    assert envelope_needed([np.arange(1, 201) * 0.1]) == 25.0
    # the largest pair decides; non-finite distances and pairs with nothing removed add nothing
    assert envelope_needed([np.array([1.0, 2.0]), np.array([np.inf, 11.0]), np.array([])]) == 20
    assert envelope_needed([]) == 5.0 and envelope_needed([np.array([])]) == 5.0
    # a removed cap 4 voxels deep: its tip 16 mm from the rest of the ball, one voxel of it;
    # the 99.5th percentile is 12.1 mm: 17.1 mm with the margin, rounded up to 20 mm
    original, defaced, cap = sphere_head()
    distances = removed_tissue_distances(original > 0, defaced, SPACING)
    assert distances.shape == (cap.sum(),) and distances.max() == 16.0
    assert np.isin(distances, [4.0, 8.0, 12.0, 16.0]).all()
    envelope = envelope_needed([distances])
    assert envelope == 20.0 and attack_region(defaced, SPACING, envelope)[cap].all()


def test_no_head_left_makes_every_zero_voxel_the_region():
    empty = np.zeros((10, 10, 10), np.float32)
    empty[0, 0, 0] = -5.0  # nothing positive: no head
    assert not remaining_head(empty, SPACING).any()
    assert np.array_equal(attack_region(empty, SPACING, 10.0), empty == 0)


# -- the weighted x0 loss ------------------------------------------------------------------


class CondEcho(nn.Module):
    """Predicts x0 as the condition channel (here the clean target itself) plus ``offset``
    wherever ``offset_mask``: a known error per voxel."""

    def __init__(self, offset_mask, offset=0.5):
        super().__init__()
        self.offset_mask, self.offset = offset_mask, offset
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, inputs, t):
        return inputs[:, 1:2] + self.offset * self.offset_mask + 0 * self.dummy


class TimeBlind(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, inputs, t):
        return self.net(inputs)


def test_weight_one_everywhere_is_the_plain_loss():
    schedule = DiffusionSchedule()
    generator = torch.Generator().manual_seed(0)
    net = TimeBlind(nn.Conv3d(2, 1, 3, padding=1))
    x0 = torch.rand(2, 1, 6, 6, 6, generator=generator) * 2 - 1
    cond = torch.rand(2, 1, 6, 6, 6, generator=generator) * 2 - 1
    plain = schedule.x0_loss(net, x0, cond, generator=torch.Generator().manual_seed(3))
    ones = schedule.x0_loss(
        net, x0, cond, generator=torch.Generator().manual_seed(3), weight=torch.ones_like(x0)
    )
    assert ones.ndim == 0 and torch.allclose(ones, plain, rtol=1e-6, atol=0)
    twos = schedule.x0_loss(
        net, x0, cond, generator=torch.Generator().manual_seed(3), weight=2 * torch.ones_like(x0)
    )
    assert torch.allclose(twos, plain, rtol=1e-6, atol=0)  # a normalised mean


def test_zero_weight_outside_the_region_ignores_errors_there():
    schedule = DiffusionSchedule()
    x0 = torch.rand(1, 1, 6, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    region = torch.zeros_like(x0)
    region[..., :3, :, :] = 1.0
    wrong_outside = CondEcho(1 - region)  # exact inside the region, 0.5 off outside
    generator = torch.Generator().manual_seed(1)
    assert schedule.x0_loss(wrong_outside, x0, x0, generator, weight=region).item() == 0.0
    assert schedule.x0_loss(wrong_outside, x0, x0, generator).item() == pytest.approx(0.25 / 2)
    # a weight of 3 on one half and 1 on the other: (3 * 0 + 1 * 0.25) / (3 + 1) per voxel pair
    weighted = schedule.x0_loss(wrong_outside, x0, x0, generator, weight=1 + 2 * region)
    assert weighted.item() == pytest.approx(0.25 / 4)


# -- AttackTraining batches ----------------------------------------------------------------


def asymmetric_pairs(n=2, shape=(16, 16, 16), factor=2, seed=0):
    """Pairs whose region (the inputs' -1 voxels) lies at low X only: a flip shows."""
    rng = np.random.default_rng(seed)
    targets = torch.from_numpy(rng.uniform(-0.9, 1, (n, 1, *shape)).astype(np.float32))
    inputs = targets.clone()
    inputs[:, :, :4, shape[1] // 2 :, :] = -1.0
    return PairSet.from_volumes(inputs, targets, factor)


def test_stage1_mask_channel_is_the_coarse_region_and_weights_follow_it():
    pairs = asymmetric_pairs()
    attack = AttackTraining(mask_channel=True, region_weight=10.0)
    batch = next(stage1_batches(pairs, 4, attack)(np.random.default_rng(0)))
    assert batch["x0"].shape == (4, 1, 8, 8, 8) and batch["cond"].shape == (4, 2, 8, 8, 8)
    mask = batch["cond"][:, 1:]
    assert mask.min() >= -1 and mask.max() <= 1 and (mask == 1).any() and (mask == -1).any()
    fraction = (mask + 1) / 2  # the region's fraction of each coarse voxel
    assert torch.allclose(batch["weight"], 1 + 9 * fraction) and (batch["weight"] > 1).any()
    # the fraction is the region's, downsampled: where it is 0 the input is the target
    assert set(fraction.unique().tolist()) <= set(
        downsample(pairs.regions.float(), 2).unique().tolist()
    )
    assert torch.equal(batch["x0"][fraction == 0], batch["cond"][:, :1][fraction == 0])


def test_stage2_mask_channel_is_plus_minus_one_on_the_region():
    pairs = asymmetric_pairs()
    attack = AttackTraining(mask_channel=True, region_weight=10.0)
    batch = next(stage2_batches(pairs, 4, 8, attack)(np.random.default_rng(0)))
    assert batch["x0"].shape == (4, 1, 8, 8, 8) and batch["cond"].shape == (4, 3, 8, 8, 8)
    mask, given = batch["cond"][:, 2:], batch["cond"][:, 1:2]
    assert set(mask.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(mask == 1, given == -1)  # from_volumes' default region: the input's -1
    assert torch.equal(batch["weight"], torch.where(mask == 1, 10.0, 1.0))
    assert torch.equal(mask_channel(torch.tensor([True, False])), torch.tensor([1.0, -1.0]))


@pytest.mark.parametrize("stage", [1, 2])
def test_flip_mirrors_target_conditions_and_weights_together(stage):
    pairs = asymmetric_pairs()
    attack = AttackTraining(mask_channel=True, region_weight=10.0, flip=True)
    if stage == 1:
        batches, edge = stage1_batches(pairs, 1, attack), 2  # 4 voxels of 16 at factor 2
    else:
        batches, edge = stage2_batches(pairs, 1, 0, attack), 4
    draw = batches(np.random.default_rng(0))
    flipped = 0
    for _ in range(30):
        batch = next(draw)
        x0, given, mask, weight = (
            batch["x0"][0, 0],
            batch["cond"][0, -2],
            batch["cond"][0, -1],
            batch["weight"][0, 0],
        )
        inside = mask > -1
        assert inside.any()
        low_x, high_x = inside[:edge].any(), inside[-edge:].any()
        assert low_x != high_x  # the region at one end of X: mirrored or not
        flipped += bool(high_x)
        # target, input, mask and weight were mirrored together: the input is the target
        # outside the region, and the weight is the mask's
        assert torch.allclose(x0[~inside], given[~inside], rtol=0, atol=1e-3)  # float16
        assert torch.allclose(weight, 1 + 9 * (mask + 1) / 2)
        if stage == 2:  # the coarse condition too: the target blurred, not its mirror image
            coarse = batch["cond"][0, 0]
            assert (coarse - x0).abs().mean() < (coarse - x0.flip(0)).abs().mean()
    assert 5 < flipped < 25  # about half of them


def small_region_pairs(shape=(32, 32, 32)):
    targets = torch.from_numpy(
        np.random.default_rng(0).uniform(-0.9, 1, (2, 1, *shape)).astype(np.float32)
    )
    inputs = targets.clone()
    inputs[:, :, 22:26, 3:7, 20:24] = -1.0  # a 4-voxel cube: most random windows miss it
    return PairSet.from_volumes(inputs, targets, 2)


def test_focused_windows_always_hold_region_voxels():
    pairs = small_region_pairs()

    def hits(focus):
        attack = AttackTraining(mask_channel=True, focus=focus)
        batch = next(stage2_batches(pairs, 40, 8, attack)(np.random.default_rng(1)))
        return (batch["cond"][:, 2] == 1).flatten(1).any(dim=1)

    assert hits(1.0).all()
    assert not hits(0.0).all()  # unfocused, some windows miss the cube


def test_coarse_noise_changes_the_coarse_condition_only():
    pairs = small_region_pairs()
    clean = AttackTraining(mask_channel=True, region_weight=5.0)
    noisy = AttackTraining(mask_channel=True, region_weight=5.0, coarse_noise=0.5)
    a = next(stage2_batches(pairs, 1, 8, clean)(np.random.default_rng(4)))
    b = next(stage2_batches(pairs, 1, 8, noisy)(np.random.default_rng(4)))
    assert torch.equal(a["x0"], b["x0"]) and torch.equal(a["weight"], b["weight"])
    assert torch.equal(a["cond"][:, 1:], b["cond"][:, 1:])
    difference = b["cond"][:, 0] - a["cond"][:, 0]
    assert difference.abs().max() > 0 and difference.std() <= 0.5


def test_no_attack_is_the_papers_recipe():
    pairs = asymmetric_pairs()
    one = next(stage1_batches(pairs, 2)(np.random.default_rng(0)))
    two = next(stage2_batches(pairs, 2, 8)(np.random.default_rng(0)))
    assert one["cond"].shape[1] == 1 and two["cond"].shape[1] == 2
    assert (one["weight"] == 1).all() and (two["weight"] == 1).all()
    assert AttackTraining() == AttackTraining(mask_channel=False, region_weight=1.0, focus=0.0)


def test_the_configured_attack_takes_the_config_schemas_defaults():
    schema = validate_config({})["reface"]["attack"]
    assert asdict(AttackTraining.from_config({})) == schema
    flipless = AttackTraining.from_config({"attack": {"flip": False}})
    assert asdict(flipless) == {**schema, "flip": False}
    with pytest.raises(InputError, match=r"^config reface\.attack\.focus: 2 is greater than the"):
        AttackTraining.from_config({"attack": {"focus": 2}})
