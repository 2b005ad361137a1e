"""Tests for networks.py (the registry) and the networks it gathers from unet.py, enet.py,
dimwit.py and network_blocks.py: shapes, gradients, parameter counts, initialisation, registry
and input checks.

Expected values are worked out by hand from the architecture descriptions (the boundary-loss
repository's UNet, Paszke et al. 2016 for ENet), not read back from the code under test.
Small widths and inputs keep the whole file fast on a 2-core CPU.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import nn

from boundary_loss.networks import registry as networks
from boundary_loss.networks.registry import NETWORKS, get_network, init_weights

# (registry name, constructor kwargs, input shape B C *S, number of classes K); small widths.
SMALL_CASES = [
    ("UNet", {"nG": 4}, (2, 2, 32, 32), 3),
    ("UNet3D", {"nG": 2}, (2, 1, 16, 16, 16), 2),
    ("ResidualUNet", {"nG": 4}, (2, 2, 32, 24), 3),
    ("ENet", {"factor": 1}, (2, 3, 32, 32), 4),
    ("Dimwit", {}, (2, 2, 16, 12), 3),
    ("Dummy", {}, (2, 1, 8, 8), 2),
    ("Dimwit3D", {}, (2, 1, 8, 6, 4), 2),
    (
        "PlainUNet3D",
        {
            "pools": [[2, 1, 2], [2, 2, 2]],
            "kernels": [[3, 1, 3], [3, 3, 3], [3, 3, 3]],
            "features": 2,
        },
        (2, 1, 8, 4, 8),
        2,
    ),
]
SMALL_IDS = [case[0] for case in SMALL_CASES]


def _n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_registry_has_every_network_and_dimensions() -> None:
    assert set(NETWORKS) == {
        "UNet",
        "UNet3D",
        "ResidualUNet",
        "ENet",
        "Dimwit",
        "Dummy",
        "Dimwit3D",
        "PlainUNet3D",
    }
    assert networks.Dummy is networks.Dimwit
    expected_dims = {
        "UNet": 2,
        "UNet3D": 3,
        "ResidualUNet": 2,
        "ENet": 2,
        "Dimwit": 2,
        "Dummy": 2,
        "Dimwit3D": 3,
        "PlainUNet3D": 3,
    }
    assert {name: cls.dimensions for name, cls in NETWORKS.items()} == expected_dims
    assert {name for name, _, _, _ in SMALL_CASES} == set(NETWORKS)


def test_networks_module_exports_every_public_name() -> None:
    """Every public network class of the network modules is importable from networks."""
    from boundary_loss.networks import blocks as network_blocks
    from boundary_loss.networks import dimwit, enet, unet

    found = set()
    for module in (unet, enet, dimwit, network_blocks):
        for name, value in vars(module).items():
            if (
                not name.startswith("_")
                and isinstance(value, type)
                and issubclass(value, nn.Module)
                and value.__module__ == module.__name__
            ):
                found.add(name)
                assert getattr(networks, name, None) is value, f"{module.__name__}.{name}"
                assert name in networks.__all__, name
    assert found >= {"UNet", "UNet3D", "ResidualUNet", "ENet", "Dimwit", "Dimwit3D"}
    assert all(hasattr(networks, name) for name in networks.__all__)


@pytest.mark.parametrize(("name", "kwargs", "shape", "k"), SMALL_CASES, ids=SMALL_IDS)
def test_output_shape_and_dtype(name: str, kwargs: dict, shape: tuple[int, ...], k: int) -> None:
    torch.manual_seed(0)
    net = get_network(name, shape[1], k, **kwargs)
    assert net.dimensions == len(shape) - 2
    out = net(torch.rand(shape))
    B, _, *spatial = shape
    assert out.shape == (B, k, *spatial)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["UNet", "Dimwit"])
def test_integer_input_is_cast_to_float(name: str) -> None:
    net = get_network(name, 1, 2, **({"nG": 2} if name == "UNet" else {})).eval()
    x = torch.randint(0, 255, (1, 1, 16, 16), dtype=torch.uint8)
    out = net(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, net(x.float()))


@pytest.mark.parametrize(("name", "kwargs", "shape", "k"), SMALL_CASES, ids=SMALL_IDS)
def test_gradients_reach_every_parameter(
    name: str, kwargs: dict, shape: tuple[int, ...], k: int
) -> None:
    torch.manual_seed(0)
    net = get_network(name, shape[1], k, **kwargs).train()
    net(torch.randn(shape)).sum().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, f"{name}.{pname} receives no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}.{pname} has a non-finite gradient"
        # The residual block keeps the original's bias on the conv right before a BatchNorm:
        # in training mode BatchNorm subtracts the batch mean, so that bias gets a zero gradient.
        if pname.endswith("convs.1.bias"):
            continue
        assert p.grad.abs().sum() > 0, f"{name}.{pname} has an all-zero gradient"


def test_unet_parameter_count_by_hand() -> None:
    # UNet(nin=1, nout=2, nG=64). A conv block (3x3 conv without bias, BatchNorm, PReLU with one
    # shared slope) from a to b channels has 9ab + 2b + 1 parameters.
    #   conv0   cb(1,64)  = 576 + 128 + 1          = 705
    #           cb(64,64) = 36864 + 128 + 1        = 36993           -> 37698
    #   conv1   cb(64,128)  = 73728 + 257          = 73985
    #           cb(128,128) = 147456 + 257         = 147713          -> 221698
    #   conv2   cb(128,256) = 294912 + 513         = 295425
    #           cb(256,256) = 589824 + 513         = 590337          -> 885762
    #   bridge  cb(256,512) = 1179648 + 1025       = 1180673
    #           residual(512,512): cb(512,512) = 2359296 + 1025 = 2360321,
    #             3x3 conv with bias 2359296 + 512 = 2359808, BatchNorm 1024,
    #             no shortcut (same width)         = 4721153
    #           cb(512,512)                        = 2360321         -> 8262147
    #   deconv1 2 x cb(512,512)                    = 4720642
    #   conv5   cb(768,256) = 1769472 + 513        = 1769985
    #           cb(256,256)                        = 590337          -> 2360322
    #   deconv2 2 x cb(256,256)                    = 1180674
    #   conv6   cb(384,128) = 442368 + 257         = 442625
    #           cb(128,128)                        = 147713          -> 590338
    #   deconv3 2 x cb(128,128)                    = 295426
    #   conv7   cb(192,64) = 110592 + 129          = 110721
    #           cb(64,64)                          = 36993           -> 147714
    #   final   1x1 conv with bias 64*2 + 2        = 130
    # Total: 37698 + 221698 + 885762 + 8262147 + 4720642 + 2360322 + 1180674 + 590338
    #        + 295426 + 147714 + 130 = 18702551
    net = networks.UNet(1, 2, nG=64)
    assert _n_params(net) == 18_702_551


def _unet_count_from_description(nin: int, nout: int, nG: int, dims: int) -> int:
    """Parameter count of the UNet written from its layer list (nG=64, three stride-2
    downsamplings, BatchNorm + PReLU blocks, residual bridge), for any width."""
    k = 3**dims  # weights of one 3x3 (x3) kernel

    def cb(a: int, b: int) -> int:  # conv (no bias) + BatchNorm + PReLU
        return k * a * b + 2 * b + 1

    g = nG
    blocks = [(nin, g), (g, g), (g, 2 * g), (2 * g, 2 * g), (2 * g, 4 * g), (4 * g, 4 * g)]
    blocks += [(4 * g, 8 * g), (8 * g, 8 * g)]  # bridge: stride-2 block, last block
    blocks += [(8 * g, 8 * g)] * 2 + [(12 * g, 4 * g), (4 * g, 4 * g)]  # deconv1, conv5
    blocks += [(4 * g, 4 * g)] * 2 + [(6 * g, 2 * g), (2 * g, 2 * g)]  # deconv2, conv6
    blocks += [(2 * g, 2 * g)] * 2 + [(3 * g, g), (g, g)]  # deconv3, conv7
    residual = cb(8 * g, 8 * g) + (k * 64 * g * g + 8 * g) + 2 * 8 * g
    final = g * nout + nout
    return sum(cb(a, b) for a, b in blocks) + residual + final


@pytest.mark.parametrize(
    ("cls", "nin", "nout", "nG", "dims"),
    [
        (networks.UNet, 1, 2, 64, 2),
        (networks.UNet, 3, 5, 8, 2),
        (networks.UNet3D, 1, 2, 16, 3),
        (networks.UNet3D, 2, 4, 4, 3),
    ],
)
def test_unet_parameter_count_formula(cls: type, nin: int, nout: int, nG: int, dims: int) -> None:
    assert _n_params(cls(nin, nout, nG=nG)) == _unet_count_from_description(nin, nout, nG, dims)


def test_unet3d_default_width_is_16() -> None:
    net = networks.UNet3D(1, 2)
    assert net.nG == 16
    assert _n_params(net) == _unet_count_from_description(1, 2, 16, 3)


@pytest.mark.parametrize(
    ("cls", "nin", "nout", "expected"),
    [
        # conv 2x2: 4*nin*10 + 10 bias; transposed conv 2x2: 10*nout*4 + nout bias
        (networks.Dimwit, 1, 2, 4 * 1 * 10 + 10 + 10 * 2 * 4 + 2),  # 132
        (networks.Dimwit, 3, 4, 4 * 3 * 10 + 10 + 10 * 4 * 4 + 4),  # 174
        # 2x2x2 kernels: 8 weights each
        (networks.Dimwit3D, 1, 2, 8 * 1 * 10 + 10 + 10 * 2 * 8 + 2),  # 252
    ],
)
def test_dimwit_parameter_count(cls: type, nin: int, nout: int, expected: int) -> None:
    assert _n_params(cls(nin, nout)) == expected


def test_enet_size_matches_the_paper() -> None:
    # Paszke et al. 2016 report 0.37 M parameters for ENet (RGB input, Cityscapes-like classes).
    n = _n_params(networks.ENet(3, 19))
    assert abs(n - 370_000) / 370_000 < 0.05, n
    # Widths scale with factor, so parameters grow about as factor^2.
    n2 = _n_params(networks.ENet(3, 19, factor=2))
    assert 3.5 < n2 / n < 4.5


def test_unet_full_size_forward() -> None:
    # The paper's width on a small input: cheap (well under a second on CPU).
    net = get_network("UNet", 1, 2).eval()
    with torch.no_grad():
        out = net(torch.rand(1, 1, 16, 16))
    assert out.shape == (1, 2, 16, 16)


# --------------------------------------------------------------------------------------------
# init_weights
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bn_cls", [nn.BatchNorm2d, nn.BatchNorm3d])
def test_init_weights_batchnorm(bn_cls: type) -> None:
    torch.manual_seed(0)
    bn = bn_cls(40_000)
    bn.bias.data.fill_(3.0)
    bn.apply(init_weights)
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    # N(1, 0.02) over 40000 values: the standard errors of the mean and of the std are
    # 0.02 / 200 = 1e-4 and about 0.02 / 283 = 7e-5.
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=1e-3)
    assert bn.weight.std().item() == pytest.approx(0.02, abs=1e-3)


@pytest.mark.parametrize(
    ("layer", "expected_std"),
    [
        # xavier normal: std = sqrt(2 / (fan_in + fan_out)), fan = channels * kernel volume
        (nn.Conv2d(64, 32, 3), math.sqrt(2 / (64 * 9 + 32 * 9))),
        (nn.Conv3d(16, 8, 3), math.sqrt(2 / (16 * 27 + 8 * 27))),
        (nn.ConvTranspose2d(32, 16, 2), math.sqrt(2 / (32 * 4 + 16 * 4))),
        (nn.ConvTranspose3d(32, 16, 2), math.sqrt(2 / (32 * 8 + 16 * 8))),
    ],
    ids=["Conv2d", "Conv3d", "ConvTranspose2d", "ConvTranspose3d"],
)
def test_init_weights_conv_xavier_normal(layer: nn.Module, expected_std: float) -> None:
    torch.manual_seed(0)
    layer.apply(init_weights)
    w = layer.weight.detach()
    # At least 2048 values: the relative standard error of the std is below 2 %.
    assert w.mean().item() == pytest.approx(0.0, abs=4 * expected_std / math.sqrt(w.numel()))
    assert w.std().item() == pytest.approx(expected_std, rel=0.06)


def test_init_weights_leaves_other_modules_alone() -> None:
    lin = nn.Linear(4, 3)
    before = lin.weight.detach().clone()
    lin.apply(init_weights)
    assert torch.equal(lin.weight, before)


def test_get_network_applies_init_weights() -> None:
    torch.manual_seed(0)
    net = get_network("UNet", 1, 2, nG=8)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns
    weights = torch.cat([bn.weight.detach() for bn in bns])
    assert all(torch.equal(bn.bias, torch.zeros_like(bn.bias)) for bn in bns)
    # PyTorch's default BatchNorm weight is exactly 1; N(1, 0.02) is not.
    assert weights.std().item() == pytest.approx(0.02, rel=0.2)
    assert (weights - 1).abs().max().item() < 0.15


# --------------------------------------------------------------------------------------------
# Registry and input validation
# --------------------------------------------------------------------------------------------


def test_get_network_unknown_name_lists_known_names() -> None:
    known = "UNet, UNet3D, ResidualUNet, ENet, Dimwit, Dummy, Dimwit3D"
    with pytest.raises(ValueError, match=r"Unknown network 'UNET'.*" + re.escape(known)):
        get_network("UNET", 1, 2)


def test_get_network_bad_keyword_names_the_network() -> None:
    with pytest.raises(TypeError, match="'Dimwit'.*nG"):
        get_network("Dimwit", 1, 2, nG=4)


@pytest.mark.parametrize(
    ("name", "args", "match"),
    [
        ("UNet", (0, 2), "UNet: nin must be a positive integer, got 0"),
        ("UNet", (1, 2, 0), "UNet: nG must be a positive integer"),
        ("ENet", (16, 2), "ENet:.*16 input channels.*16 \\* factor = 16"),
        ("ENet", (1, 2, 0), "ENet: factor must be a positive integer"),
    ],
)
def test_bad_constructor_arguments(name: str, args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NETWORKS[name](*args)


# Smallest widths for the input-validation tests: the check runs before any layer.
TINY = {"UNet": {"nG": 1}, "UNet3D": {"nG": 1}, "ResidualUNet": {"nG": 1}}


@pytest.mark.parametrize(
    ("name", "nin", "shape", "match"),
    [
        # wrong channel count
        ("UNet", 1, (1, 2, 16, 16), r"UNet .*1 input channel.*\(B, 1, H, W\).*\(1, 2, 16, 16\)"),
        ("ENet", 3, (1, 1, 16, 16), r"ENet .*3 input channel.*\(B, 3, H, W\).*\(1, 1, 16, 16\)"),
        ("UNet3D", 2, (1, 1, 8, 8, 8), r"UNet3D .*\(B, 2, H, W, D\).*\(1, 1, 8, 8, 8\)"),
        # spatial size not divisible by the downsampling factor
        ("UNet", 1, (1, 1, 20, 16), r"UNet downsamples by 8.*\(1, 1, 20, 16\)"),
        ("ResidualUNet", 1, (1, 1, 16, 12), r"ResidualUNet downsamples by 8.*\(1, 1, 16, 12\)"),
        ("ENet", 1, (1, 1, 16, 36), r"ENet downsamples by 8.*\(1, 1, 16, 36\)"),
        ("Dimwit", 1, (1, 1, 7, 8), r"Dimwit downsamples by 2.*\(B, 1, H, W\).*\(1, 1, 7, 8\)"),
        ("Dimwit3D", 1, (1, 1, 4, 4, 3), r"Dimwit3D downsamples by 2.*\(1, 1, 4, 4, 3\)"),
        ("UNet3D", 1, (1, 1, 16, 16, 12), r"UNet3D downsamples by 8.*\(1, 1, 16, 16, 12\)"),
        # 3D volume given to a 2D network, and the reverse
        ("UNet", 1, (1, 1, 16, 16, 16), r"UNet is a 2D network.*4D.*5D.*\(1, 1, 16, 16, 16\)"),
        ("Dimwit", 1, (1, 1, 8, 8, 8), r"Dimwit is a 2D network.*\(1, 1, 8, 8, 8\)"),
        ("UNet3D", 1, (1, 1, 16, 16), r"UNet3D is a 3D network.*5D.*4D.*\(1, 1, 16, 16\)"),
        ("ENet", 1, (1, 16, 16), r"ENet is a 2D network.*\(1, 16, 16\)"),
    ],
)
def test_bad_input_raises_value_error(
    name: str, nin: int, shape: tuple[int, ...], match: str
) -> None:
    net = NETWORKS[name](nin, 2, **TINY.get(name, {}))
    with pytest.raises(ValueError, match=match):
        net(torch.zeros(shape))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(("name", "kwargs", "shape", "k"), SMALL_CASES, ids=SMALL_IDS)
def test_forward_backward_cuda(name: str, kwargs: dict, shape: tuple[int, ...], k: int) -> None:
    net = get_network(name, shape[1], k, **kwargs).cuda()
    out = net(torch.rand(shape, device="cuda"))
    out.sum().backward()
    assert out.shape == (shape[0], k, *shape[2:])
    assert out.dtype == torch.float32
