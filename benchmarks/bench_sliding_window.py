"""Sliding-window inference (networks.sliding_window) against MONAI's ``sliding_window_inference``.

- `sliding_window`: one 1 x 2 x 96 x 96 x 48 volume through a PlainUNet3D (features 8, three
  2x2x2 poolings, K = 3, softmax), windows of 48 x 48 x 24 at overlap 0.5 (27 windows), 3 windows
  per call, Gaussian blending; ours against MONAI 1.6.1's ``sliding_window_inference(mode=
  "gaussian")`` with the same network, volume and windows, in the same run. The network dominates
  both, so the ratio measures what the blending adds around it. With it, the blending alone: the
  same layout with a predictor that hands back precomputed windows (a copy, as a network's fresh
  output would be), so that only the gathering, weighting, accumulation and normalisation are
  timed.

Both compare the values (max abs difference, 1e-5 allowed). Without MONAI (requirements-test.txt)
the benchmark is skipped, saying so. On a CUDA machine everything runs on the GPU, synchronised.
"""

from __future__ import annotations

import torch

from benchmarks.harness import Figure, speedup
from boundary_loss.networks.plain_unet import PlainUNet3D
from boundary_loss.networks.sliding_window import sliding_window as ours

VOLUME = (1, 2, 96, 96, 48)  # 1 C X Y Z
PATCH = (48, 48, 24)
OVERLAP = 0.5
BATCH = 3  # 9 calls of 3 windows
K = 3
TOLERANCE = 1e-5  # max abs difference of the probabilities
BASELINE = "MONAI 1.6.1 sliding_window_inference, mode gaussian, same windows and predictor"
NO_MONAI = "sliding_window: skipped, MONAI is not installed (pip install -r requirements-test.txt)"


def _synchronised(fn, device: torch.device):
    def call():
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out

    return call


def _figure(name: str, predict, image: torch.Tensor, repeat: int, notes: str) -> Figure:
    from monai.inferers import sliding_window_inference

    def mine() -> torch.Tensor:
        with torch.inference_mode():
            return ours(predict, image, PATCH, overlap=OVERLAP, batch_size=BATCH)

    def theirs() -> torch.Tensor:
        with torch.inference_mode():
            return sliding_window_inference(
                image, PATCH, BATCH, predict, overlap=OVERLAP, mode="gaussian", sigma_scale=0.125
            )

    difference = (mine() - theirs()).abs().max().item()
    figure = speedup(
        name,
        _synchronised(mine, image.device),
        _synchronised(theirs, image.device),
        baseline_name=BASELINE,
        repeat=repeat,
        target_ratio=None,
        same_values=difference <= TOLERANCE,
        notes=f"{notes} Max abs difference of the probabilities {difference:.2e} (at most "
        f"{TOLERANCE:g} allowed).",
    )
    print(f"{name}: max abs difference against MONAI {difference:.2e}", flush=True)
    return figure


def sliding_window() -> list[Figure]:
    """The two figures, or none (printed why) without MONAI."""
    try:
        import monai.inferers  # noqa: F401
    except ImportError:
        print(NO_MONAI, flush=True)
        return []
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = "cuda" if device.type == "cuda" else "CPU"
    torch.manual_seed(0)
    net = PlainUNet3D(VOLUME[1], K, [[2, 2, 2]] * 3, [[3, 3, 3]] * 4, features=8)
    net = net.to(device).eval()
    image = torch.randn(VOLUME, generator=torch.Generator().manual_seed(1)).to(device)
    layout = (
        f"{' x '.join(map(str, VOLUME))} volume, windows {' x '.join(map(str, PATCH))}, "
        f"overlap {OVERLAP}, {BATCH} per call"
    )

    def network(x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(x), dim=1)

    windows = torch.rand((BATCH, K, *PATCH), generator=torch.Generator().manual_seed(2))
    windows = windows.to(device)

    def precomputed(x: torch.Tensor) -> torch.Tensor:
        return windows[: x.shape[0]].clone()

    return [
        _figure(
            f"sliding-window inference, PlainUNet3D (features 8), {layout}, {where}",
            network,
            image,
            repeat=5,
            notes="27 windows in 9 calls; softmax of the network's logits; ratio = MONAI's "
            "time / ours. On a CPU, PyTorch runs the 3x3x3 convolutions of a single window "
            "(batch 1 and N*C*X*Y <= 20480) with its slow im2col kernel instead of oneDNN, "
            "about 4x slower per window here, for ours and MONAI's alike: several windows per "
            "call avoid it.",
        ),
        _figure(
            f"sliding-window blending alone (precomputed windows), {layout}, {where}",
            precomputed,
            image,
            repeat=30,
            notes="The predictor returns a copy of fixed random windows: the time is the "
            "gathering of the windows, the Gaussian weighting, the accumulation and the "
            "normalisation (ours: one fused multiply-add per window into the output, the weight "
            "sum computed once; MONAI: a multiply, then an add per window).",
        ),
    ]


BENCHES = {"sliding_window": sliding_window}
