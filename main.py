"""Training, where the original boundary-loss repository had it: `python main.py ...`.

The code is `boundary_loss.training.main`.
"""

from boundary_loss.training.main import main

if __name__ == "__main__":
    raise SystemExit(main())
