"""lpd-engine: fast inference for Locality-aware Parallel Decoding (LPD) image generators.

    from lpd_engine import Generator
    images = Generator().run([3, 1, 4]).images

The PyTorch reference (`lpd_engine.reference`) and torch-based backends import torch lazily;
`import lpd_engine` needs only numpy, pillow and tqdm.
"""

from .errors import (BackendUnavailableError, BundleError, CheckpointError, InvalidLabelError,
                     InvalidRequestError, InvalidSamplingError, InvalidScheduleError, LpdError)
from .generator import GenerationResult, Generator
from .sampling import SamplingParams

__version__ = "0.1.0"

__all__ = ["Generator", "GenerationResult", "SamplingParams", "LpdError", "InvalidRequestError",
           "InvalidLabelError", "InvalidSamplingError", "InvalidScheduleError", "CheckpointError",
           "BundleError", "BackendUnavailableError"]
