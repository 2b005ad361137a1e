"""Curves and box plots of run folders: `python plot.py ...`, where the original
boundary-loss repository had it.

The code is `boundary_loss.report.plot`.
"""

from boundary_loss.report.plot import main

if __name__ == "__main__":
    raise SystemExit(main())
