"""The report of run folders: `python report.py ...`, where the original
boundary-loss repository had it.

The code is `boundary_loss.report.summary`.
"""

from boundary_loss.report.summary import main

if __name__ == "__main__":
    raise SystemExit(main())
