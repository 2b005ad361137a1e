"""The `slow` mark: the test modules that run the pipeline, its scripts in subprocesses, or
trainings. `make test-fast` leaves them out for the inner loop; `make test` (CI) runs them all.

`quick_zips`: the stand-in zips of a dataset's quick cohort, generated once per test session for
the modules that read them (the generator's, the slicers', the original command lines').
"""

from __future__ import annotations

from collections.abc import Callable
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


@pytest.fixture(scope="session")
def quick_zips(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """dataset -> the folder holding its quick cohort's zips (seed 0), generated on first use.

    Shared by every module of the session: read the zips or copy them, never write beside them.
    """
    from boundary_loss.preprocessing.synthetic import generate

    folders: dict[str, Path] = {}

    def get(dataset: str) -> Path:
        if dataset not in folders:
            folder = tmp_path_factory.mktemp(f"{dataset}-quick")
            generate(dataset, folder, seed=0, size="quick")
            folders[dataset] = folder
        return folders[dataset]

    return get
