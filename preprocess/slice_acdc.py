"""Slicing ACDC 2017: `python preprocess/slice_acdc.py ...`.

The code is `boundary_loss.preprocessing.slice_acdc`.

Run by path, this script finds `boundary_loss` where it is installed: `make install` installs the
repository into .venv in editable mode, `pip install -e .` into another interpreter.
"""

from boundary_loss.preprocessing.slice_acdc import main

if __name__ == "__main__":
    raise SystemExit(main())
