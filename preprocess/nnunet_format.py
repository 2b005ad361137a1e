"""Reading an nnU-Net or Decathlon dataset's description: `python preprocess/nnunet_format.py ...`.

The code is `boundary_loss.preprocessing.nnunet_format`.

Run by path, this script finds `boundary_loss` where it is installed: `make install` installs the
repository into .venv in editable mode, `pip install -e .` into another interpreter.
"""

from boundary_loss.preprocessing.nnunet_format import main

if __name__ == "__main__":
    raise SystemExit(main())
