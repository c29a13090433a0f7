"""gpu-als: Alternating Least Squares for recommender systems, on the CPU or a CUDA GPU."""

from ._version import __version__
from .data import from_dataframe
from .exceptions import BackendUnavailableError, NotFittedError
from .interop import from_implicit, to_implicit
from .model import ALS, AlternatingLeastSquares

__all__ = [
    "ALS",
    "AlternatingLeastSquares",
    "BackendUnavailableError",
    "NotFittedError",
    "from_dataframe",
    "from_implicit",
    "to_implicit",
    "__version__",
]
