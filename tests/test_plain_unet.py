"""Tests for networks.plain_unet: nnU-Net's plain 3D U-Net (PlainConvUNet, Isensee et al. 2021).

Shapes, layer sizes and parameter counts are worked out by hand from nnU-Net's architecture (two
conv -> InstanceNorm -> LeakyReLU blocks per stage, strided-conv downsampling, transposed-conv
upsampling with kernel = stride = pool, a 1x1x1 output conv), not read back from the code.
Widths of 2 to 8 channels and volumes of a few hundred voxels keep the file fast.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from boundary_loss.networks.plain_unet import PlainUNet3D
from boundary_loss.networks.registry import NETWORKS, get_network

# An anisotropic plan: Y is the thick axis, so stage 0 has kernel 1 and no pooling along it.
POOLS = [[2, 1, 2], [2, 2, 2]]
KERNELS = [[3, 1, 3], [3, 3, 3], [3, 3, 3]]
SHAPE = (1, 2, 16, 8, 16)  # B C X Y Z; X and Z divisible by 4, Y by 2


def net(**kwargs) -> PlainUNet3D:
    torch.manual_seed(0)
    return PlainUNet3D(2, 3, POOLS, KERNELS, **({"features": 4} | kwargs))


def test_output_shape_and_dtype() -> None:
    out = net()(torch.randn(SHAPE))
    assert out.shape == (1, 3, 16, 8, 16)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_integer_input_is_cast_to_float() -> None:
    model = net().eval()
    x = torch.randint(0, 5, SHAPE, dtype=torch.int64)
    torch.testing.assert_close(model(x), model(x.float()))


def test_deep_supervision_returns_every_decoder_stage_in_training_only() -> None:
    model = net(deep_supervision=True).train()
    outs = model(torch.randn(SHAPE))
    # Decoder stages at full resolution and at 1/pools[0] = 1/(2, 1, 2); the bottleneck
    # (1/(4, 2, 4)) has no output.
    assert [tuple(o.shape) for o in outs] == [(1, 3, 16, 8, 16), (1, 3, 8, 8, 8)]
    model.eval()
    out = model(torch.randn(SHAPE))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 3, 16, 8, 16)


def test_deep_supervision_full_output_is_the_plain_output() -> None:
    """The deep-supervision network's full-resolution output in training mode is the one it
    gives in eval mode (instance norm has no running statistics: the modes compute alike)."""
    model = net(deep_supervision=True)
    x = torch.randn(SHAPE)
    full = model.train()(x)[0]
    torch.testing.assert_close(full, model.eval()(x))


def test_layer_shapes_follow_the_plan() -> None:
    model = net(features=4, max_features=6)
    # Widths: min(4 * 2**i, 6) = 4, 6, 6.
    convs = [m for m in model.encoder[0] if isinstance(m, nn.Conv3d)]
    # Stage 0: kernel 1 along the thick axis Y, padding 0 there, 1 elsewhere.
    assert [tuple(c.weight.shape) for c in convs] == [(4, 2, 3, 1, 3), (4, 4, 3, 1, 3)]
    assert [c.padding for c in convs] == [(1, 0, 1), (1, 0, 1)]
    assert [c.stride for c in convs] == [(1, 1, 1), (1, 1, 1)]
    first = [m for m in model.encoder[1] if isinstance(m, nn.Conv3d)][0]
    assert tuple(first.weight.shape) == (6, 4, 3, 3, 3) and first.stride == (2, 1, 2)
    first = [m for m in model.encoder[2] if isinstance(m, nn.Conv3d)][0]
    assert tuple(first.weight.shape) == (6, 6, 3, 3, 3) and first.stride == (2, 2, 2)
    # Upsampling, lowest first: kernel = stride = pool; ConvTranspose weights are (in, out, k).
    ups = list(model.upsample)
    assert [(tuple(u.weight.shape), u.stride) for u in ups] == [
        ((6, 6, 2, 2, 2), (2, 2, 2)),
        ((6, 4, 2, 1, 2), (2, 1, 2)),
    ]
    # The top decoder stage takes the concatenation (4 upsampled + 4 skip) with stage 0's kernel.
    top = [m for m in model.decoder[-1] if isinstance(m, nn.Conv3d)]
    assert [tuple(c.weight.shape) for c in top] == [(4, 8, 3, 1, 3), (4, 4, 3, 1, 3)]
    assert [tuple(h.weight.shape) for h in model.heads] == [(3, 4, 1, 1, 1)]
    assert model.factors == (4, 2, 4)


def test_instance_norm_and_leaky_relu_after_every_conv() -> None:
    model = net()
    for stage in [*model.encoder, *model.decoder]:
        kinds = [type(m) for m in stage]
        assert kinds == [nn.Conv3d, nn.InstanceNorm3d, nn.LeakyReLU] * 2
        for m in stage:
            if isinstance(m, nn.InstanceNorm3d):
                assert m.affine and m.eps == 1e-5 and not m.track_running_stats
            if isinstance(m, nn.LeakyReLU):
                assert m.negative_slope == 0.01
    assert not any(isinstance(m, nn.BatchNorm3d) for m in model.modules())


def test_parameter_count_by_hand() -> None:
    # A conv a -> b of kernel volume k has a*b*k weights + b biases; an affine InstanceNorm 2b.
    # Widths 4, 8, 16; kernel volumes 9 (3x1x3) and 27; n_in 2, K 3.
    #   encoder 0: conv 2->4 (72 + 4), norm 8, conv 4->4 (144 + 4), norm 8            =   240
    #   encoder 1: conv 4->8 (864 + 8), norm 16, conv 8->8 (1728 + 8), norm 16        =  2640
    #   encoder 2: conv 8->16 (3456 + 16), norm 32, conv 16->16 (6912 + 16), norm 32  = 10464
    #   up 16->8, kernel 2x2x2: 16*8*8 + 8                                            =  1032
    #   decoder 1: conv 16->8 (3456 + 8), norm 16, conv 8->8 (1728 + 8), norm 16      =  5232
    #   up 8->4, kernel 2x1x2: 8*4*4 + 4                                              =   132
    #   decoder 0: conv 8->4 (288 + 4), norm 8, conv 4->4 (144 + 4), norm 8           =   456
    #   head 1x1x1 4->3: 12 + 3                                                       =    15
    # Total 20211; deep supervision adds a head on decoder 1: 8*3 + 3 = 27.
    count = sum(p.numel() for p in net().parameters())
    assert count == 20211
    assert sum(p.numel() for p in net(deep_supervision=True).parameters()) == 20211 + 27


def test_width_is_capped_at_max_features() -> None:
    model = PlainUNet3D(1, 2, [[2, 2, 2]] * 3, [[3, 3, 3]] * 4, features=4, max_features=10)
    assert model.widths == [4, 8, 10, 10]


def test_initialisation_is_nnunets_he_normal() -> None:
    torch.manual_seed(0)
    model = PlainUNet3D(1, 2, [[2, 2, 2]], [[3, 3, 3]] * 2, features=32)
    conv = model.encoder[1][3]  # 64 -> 64, 3x3x3: 110592 weights
    fan_in = 64 * 27
    expected = math.sqrt(2 / (1 + 0.01**2) / fan_in)  # kaiming normal, leaky ReLU a = 0.01
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.02)
    for m in model.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
        if isinstance(m, nn.InstanceNorm3d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))


def test_registry_builds_it_and_keeps_its_initialisation() -> None:
    assert NETWORKS["PlainUNet3D"] is PlainUNet3D and PlainUNet3D.dimensions == 3
    torch.manual_seed(1)
    built = get_network("PlainUNet3D", 2, 3, pools=POOLS, kernels=KERNELS, features=8)
    torch.manual_seed(1)
    direct = PlainUNet3D(2, 3, POOLS, KERNELS, features=8)
    assert built.widths == [8, 16, 32] and built.training
    for (name, a), (_, b) in zip(
        built.state_dict().items(), direct.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_gradients_reach_every_parameter() -> None:
    model = net(deep_supervision=True).train()
    sum(o.sum() for o in model(torch.randn(2, *SHAPE[1:]))).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        (
            (1, 2, 16, 8, 14),
            r"PlainUNet3D downsamples X, Y, Z by \(4, 2, 4\).*\(B, 2, X, Y, Z\).*"
            r"got \(1, 2, 16, 8, 14\).*\(16, 8, 16\)",
        ),
        ((1, 2, 16, 7, 16), r"by \(4, 2, 4\).*got \(1, 2, 16, 7, 16\).*\(16, 8, 16\)"),
        ((1, 1, 16, 8, 16), r"2 input channel.*got 1 channel\(s\) in shape \(1, 1, 16, 8, 16\)"),
        ((2, 16, 8, 16), r"3D network.*5D.*got a 4D tensor of shape \(2, 16, 8, 16\)"),
    ],
)
def test_bad_input_is_refused_naming_the_shape(shape: tuple[int, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        net()(torch.zeros(shape))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kernels": KERNELS[:2]}, r"kernels must have one entry per stage.*3, got 2"),
        ({"kernels": [[3, 2, 3], *KERNELS[1:]]}, r"kernels\[0\] must be \[X, Y, Z\] odd"),
        ({"pools": [[2, 2], [2, 2, 2]]}, r"pools\[0\] must be \[X, Y, Z\] positive.*\[2, 2\]"),
        ({"pools": [[2, 0, 2], [2, 2, 2]]}, r"pools\[0\].*\[2, 0, 2\]"),
        ({"pools": [], "kernels": [[3, 3, 3]]}, r"pools must hold at least one"),
        ({"features": 0}, r"features must be a positive integer, got 0"),
        ({"deep_supervision": 1}, r"deep_supervision must be True or False, got 1"),
    ],
)
def test_bad_arguments_are_refused(kwargs: dict, match: str) -> None:
    args = {"pools": POOLS, "kernels": KERNELS} | kwargs
    with pytest.raises(ValueError, match="PlainUNet3D: " + match):
        PlainUNet3D(2, 3, **args)


def test_a_few_optimisation_steps_reduce_the_loss() -> None:
    """Ten gradient-descent steps on two volumes whose label is the sign of the input."""
    torch.manual_seed(0)
    model = PlainUNet3D(1, 2, [[2, 2, 2]], [[3, 3, 3]] * 2, features=4)
    x = torch.randn(2, 1, 8, 8, 8)
    target = (x[:, 0] > 0).long()
    losses = []
    for _ in range(10):
        loss = nn.functional.cross_entropy(model(x), target)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= 0.5 * p.grad
        losses.append(loss.item())
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_forward_backward_cuda() -> None:
    model = net(deep_supervision=True).cuda()
    outs = model(torch.randn(SHAPE, device="cuda"))
    sum(o.sum() for o in outs).backward()
    assert [tuple(o.shape) for o in outs] == [(1, 3, 16, 8, 16), (1, 3, 8, 8, 8)]
