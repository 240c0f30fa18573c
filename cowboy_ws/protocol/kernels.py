"""The one place that picks the kernel backend (mask, UTF-8 validation).

Today only the pure-Python reference exists (``BACKEND = "python"``); the C
mirror built from ``_speedups/`` (issue 5) will be selected here, with
``COWBOY_WS_PURE=1`` forcing pure Python at import.  Every other module imports
the kernels from here, never from their implementation modules.
"""

from __future__ import annotations

from .mask import mask
from .utf8 import Utf8Validator, validate_utf8

BACKEND = "python"

__all__ = ["BACKEND", "Utf8Validator", "mask", "validate_utf8"]
