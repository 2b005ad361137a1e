"""Counting the host's reads of tensor values: what would synchronise with a GPU.

On the CPU nothing waits, but the same calls (`.item()`, `bool()`, `int()`, `float()`,
`torch.allclose`, `torch.unique`, `nonzero`, `.tolist()`, `.numpy()`, `.cpu()`) would wait for a
GPU, so counting them on the CPU tells what a training step on a GPU would do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

# The aten operations that read a tensor's values back to the host.
SYNCING_OPS = frozenset(
    {
        "aten::_local_scalar_dense",
        "aten::allclose",
        "aten::equal",
        "aten::is_nonzero",
        "aten::nonzero",
        "aten::_unique",
        "aten::_unique2",
        "aten::unique_consecutive",
        "aten::unique_dim",
        "aten::masked_select",
    }
)

# The methods of torch.Tensor that hand its values to the host (`cpu`: a copy from the device).
HOST_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__")


@contextlib.contextmanager
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Collect every read of a tensor's values by the host within the block: the names of the
    syncing aten operations run, and the name of each reading method of `torch.Tensor` called
    (`HOST_METHODS`; a method and the aten operation under it may both be noted)."""
    reads: list[str] = []

    class Reads(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func._schema.name in SYNCING_OPS:
                reads.append(func._schema.name)
            return func(*args, **(kwargs or {}))

    with monkeypatch.context() as patch:
        for method in HOST_METHODS:
            patch.setattr(torch.Tensor, method, _counted(getattr(torch.Tensor, method), reads))
        with Reads():
            yield reads


def _counted(method, reads: list[str]):
    """`method` of torch.Tensor, noting its name in `reads` at each call."""

    def wrapper(self, *args, **kwargs):
        reads.append(method.__name__)
        return method(self, *args, **kwargs)

    return wrapper


def assert_checked_once(
    monkeypatch: pytest.MonkeyPatch,
    checked: Callable[[], torch.Tensor],
    unchecked: Callable[[], torch.Tensor] | None = None,
    calls: int = 2,
) -> torch.Tensor:
    """Assert that `checked()` reads the device back (its value checks run) and that the next
    `calls` calls of `unchecked()` (default: `checked` again, a loss after its first call) read
    nothing and give the same tensor. Returns that tensor."""
    with host_reads(monkeypatch) as reads:
        first = checked()
    assert reads, "the checked call reads the checks' results back"
    with host_reads(monkeypatch) as reads:
        again = [(unchecked or checked)() for _ in range(calls)]
    assert reads == [], f"the unchecked calls read {reads} back"
    assert all(torch.equal(value, first) for value in again)
    return first
