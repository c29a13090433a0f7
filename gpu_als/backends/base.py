"""The backend contract (DESIGN.md section 3).

``model.py`` drives the alternation; a backend supplies only the array primitives below,
each taking and returning arrays of its own kind (NumPy for ``cpu``, CuPy for ``gpu``).
Hyperparameter checks, initialisation and the loop live in shared code, never here.

Notation: ``rows`` is a :class:`gpu_als.data.WeightedRows` (the CSR of R for the user
half-step, of R^T for the item half-step), ``F`` the fixed side's factors (n_cols x k),
``FtF = F^T F`` (k x k), ``out`` the factors being solved for (n_rows x k).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from ..data import WeightedRows


class Backend(ABC):
    """Array primitives for one kind of device."""

    #: Short name shown to users: "cpu" or "gpu".
    name: str = ""

    # ---- arrays ---------------------------------------------------------------------

    @abstractmethod
    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """``a`` as this backend's array (no copy when it already is one)."""

    @abstractmethod
    def to_numpy(self, a: Any) -> np.ndarray:
        """``a`` as a NumPy array on the host."""

    def put(self, rows: WeightedRows) -> WeightedRows:
        """``rows`` with its arrays moved to this backend (done once per fit)."""
        return rows.map_arrays(self.asarray)

    @abstractmethod
    def all_finite(self, a: Any) -> bool:
        """Whether every element of ``a`` is finite."""

    # ---- numerics -------------------------------------------------------------------

    @abstractmethod
    def gram(self, F: Any) -> Any:
        """``F^T F`` (k x k), accumulated in float64."""

    @abstractmethod
    def solve_rows(
        self,
        rows: WeightedRows,
        F: Any,
        FtF: Any,
        *,
        regularization: float,
        feedback: str,
        out: Any,
    ) -> Any:
        """Solve every row's ridge system and write the new factors into ``out``.

        Implicit: ``(FtF + sum_i weight_i f_i f_i^T + regularization * I) x = sum_i target_i f_i``.
        Explicit (ALS-WR): ``(sum_i f_i f_i^T + regularization * n_u * I) x = sum_i r_i f_i``
        (``FtF`` unused). A row without stored entries gets the zero vector.
        Returns ``out``.
        """

    @abstractmethod
    def loss(
        self,
        rows: WeightedRows,
        X: Any,
        Y: Any,
        YtY: Any,
        *,
        regularization: float,
        feedback: str,
    ) -> float:
        """The training loss of DESIGN.md section 1 for ``rows`` = the user rows of R."""

    @abstractmethod
    def topk(
        self,
        queries: Any,
        targets: Any,
        k: int,
        *,
        exclude: Any = None,
        candidates: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best targets per query by dot product.

        Parameters
        ----------
        queries : array, shape (n_queries, factors)
        targets : array, shape (n_targets, factors)
        k : int
            ``1 <= k <= n_targets`` (or ``len(candidates)``).
        exclude : scipy.sparse.csr_matrix, shape (n_queries, n_targets), optional
            Stored entries are never returned for that query.
        candidates : numpy.ndarray of int, optional
            Only these targets are considered.

        Returns
        -------
        ids : numpy.ndarray of int64, shape (n_queries, k)
            Target ids, best first; ``-1`` where fewer than ``k`` targets were eligible.
        scores : numpy.ndarray, shape (n_queries, k)
            Their dot products; ``-inf`` where the id is ``-1``.
        """
