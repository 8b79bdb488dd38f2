"""Public re-export of cnnjit's exception classes (defined in ``cnnjit.ir.errors``)."""

from cnnjit.ir.errors import *  # noqa: F403
from cnnjit.ir.errors import __all__  # noqa: F401
