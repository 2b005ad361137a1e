"""The `slow` mark: the test modules that run the pipeline, its scripts in subprocesses, or
trainings. `make test-fast` leaves them out for the inner loop; `make test` (CI) runs them all."""

from __future__ import annotations

from pathlib import Path

import pytest

SLOW_MODULES = frozenset(
    {
        "test_pipeline.py",  # the three dataset makefiles end to end
        "test_dataset_make.py",  # dataset.make end to end
        "test_original_commands.py",  # the original's command lines
        "test_distributed.py",  # torchrun with two processes
        "test_keras_loss.py",  # Keras under two backends, in subprocesses
        "test_checkpoint.py",  # resumes, each a training in a subprocess
        "test_main.py",  # trainings
        "test_predict.py",  # predictions from sliced stand-ins
        "test_slicing.py",  # the paper's slicers on generated cohorts
        "test_slice_nnunet.py",  # the nnU-Net slicer on crafted datasets
        "test_synthetic.py",  # the stand-in zips
        "test_lineage.py",  # the lineage checker run as a script, many times
        "test_dataset_lineage.py",  # the dataset pinner run as a script, many times
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).name in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
