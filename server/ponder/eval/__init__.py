"""`ponder eval`: accuracy, cost and calibration of every strategy on a data set."""

from .cli import run_eval

__all__ = ["run_eval"]
