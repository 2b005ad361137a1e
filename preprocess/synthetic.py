"""The synthetic stand-in datasets: `python preprocess/synthetic.py ...`.

The code is `boundary_loss.preprocessing.synthetic`.

Run by path, this script finds `boundary_loss` where it is installed: `make install` installs the
repository into .venv in editable mode, `pip install -e .` into another interpreter.
"""

from boundary_loss.preprocessing.synthetic import generate, main

__all__ = ["generate", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
