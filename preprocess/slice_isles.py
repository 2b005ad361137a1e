"""Slicing ISLES 2018: `python preprocess/slice_isles.py ...`.

The code is `boundary_loss.preprocessing.slice_isles`.

Run by path, this script finds `boundary_loss` where it is installed: `make install` installs the
repository into .venv in editable mode, `pip install -e .` into another interpreter.
"""

from boundary_loss.preprocessing.slice_isles import main

if __name__ == "__main__":
    raise SystemExit(main())
