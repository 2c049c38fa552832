"""Typed errors of lpd-engine.

Every check on user input raises one of these before any compute starts, so a serving process
can catch them, report the request as bad and keep serving. Each class also derives from the
matching built-in (ValueError, ...) so generic handlers keep working.
"""


class LpdError(Exception):
    """Base class of every error lpd-engine raises on purpose."""


class InvalidRequestError(LpdError, ValueError):
    """A generation request is malformed (base class of the three below)."""


class InvalidLabelError(InvalidRequestError):
    """A class label is not an integer in [0, num_classes)."""


class InvalidSamplingError(InvalidRequestError):
    """A guidance or sampling parameter is out of range (cfg, temperature, top_k, top_p, seed)."""


class InvalidScheduleError(InvalidRequestError):
    """Steps, group sizes or orders do not describe a valid generation schedule."""


class CheckpointError(LpdError, ValueError):
    """A state dict does not match the LPD transformer or LlamaGen VQ layout."""


class BundleError(LpdError, ValueError):
    """An engine bundle is missing, corrupt, truncated or of an unsupported version."""


class BackendUnavailableError(LpdError, RuntimeError):
    """The requested backend cannot run here (a package or the compiled module is missing)."""
