"""The 3D preprocessing of an nnU-Net or Decathlon dataset: `python preprocess/prepare_3d.py ...`.

The code is `boundary_loss.preprocessing.prepare_3d`.

Run by path, this script finds `boundary_loss` where it is installed: `make install` installs the
repository into .venv in editable mode, `pip install -e .` into another interpreter.
"""

from boundary_loss.preprocessing.prepare_3d import main

if __name__ == "__main__":
    raise SystemExit(main())
