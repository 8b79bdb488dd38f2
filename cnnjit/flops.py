"""Public re-export of the FLOP and byte counts of IR nodes (defined in ``cnnjit.ir.flops``)."""

from cnnjit.ir.flops import *  # noqa: F403
from cnnjit.ir.flops import __all__  # noqa: F401
