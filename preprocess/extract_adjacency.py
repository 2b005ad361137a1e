"""The adjacency graph of the training labels: `python preprocess/extract_adjacency.py ...`.

The code is `boundary_loss.preprocessing.extract_adjacency`.

Run by path, this script finds `boundary_loss` where it is installed: `make install` installs the
repository into .venv in editable mode, `pip install -e .` into another interpreter.
"""

from boundary_loss.preprocessing.extract_adjacency import main

if __name__ == "__main__":
    raise SystemExit(main())
