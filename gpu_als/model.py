"""The ALS estimator: hyperparameters, fit, the queries, fold-ins, saving and loading.

Notation (DESIGN.md section 1): ``R`` the users x items matrix, ``X`` the user factors
(n_users x k), ``Y`` the item factors (n_items x k), ``YtY = Y^T Y``. A half-step solves
every row of one side against the other side held fixed; both half-steps run through the
same code, fed the rows of ``R`` or of ``R^T`` (the alternation loop: ``_training.py``).
This module knows nothing of NumPy versus CuPy: arrays come from, and go to, the backend.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import json
import math
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg

from . import _files, _id_queries, _ids, data
from ._training import (
    Training,
    check_callback,
    check_definite,
    check_definite_base,
    largest_norm,
    overflowing_norm,
    score_limit,
)
from .backends import BACKEND_NAMES, Backend, get_backend, get_backend_or_cpu
from .backends.base import ITERATIVE_SOLVERS, query_result, regularized_gram
from .backends.cpu import solve_batch
from .backends.nnls import nnls_rows
from .exceptions import ImplicitModelFileError, NotFittedError

#: Initial factors are uniform in [0, INIT_SCALE), as in the implicit library.
INIT_SCALE = 0.01
SOLVERS = ("cholesky", *ITERATIVE_SOLVERS, "nnls")
#: ``regularization=None``'s value for each kind of feedback: the implicit library's
#: default, and Spark MLlib's ``regParam`` for explicit ratings (ALS-WR scales it by each
#: row's number of ratings, as Spark does). On MovieLens 100K's u1 split (15 iterations)
#: explicit feedback at 0.01 has test RMSE 1.14 (k = 8) and 1.29 (k = 32); at 0.1,
#: 0.939 and 0.937 (CPU backend, seed 0).
DEFAULT_REGULARIZATION = {"implicit": 0.01, "explicit": 0.1}
#: Rows a growing partial fit allocates beyond those it needs, as a share of them: users
#: added a few per call then copy the factors once per eighth of growth, not every call.
SPARE_ROWS = 1 / 8
#: predict() gathers the factors of this many (pairs x factors) values at a time: a first
#: call for 1M pairs at k = 64 took 1.4-1.6 s gathered at once (mostly fresh pages for
#: 768 MB of temporaries; 0.25-0.29 s when called again) and takes 0.19 s in blocks of
#: 2^20 values (one-off script, side by side).
PREDICT_BLOCK_ELEMENTS = 1 << 20
#: What ``set_output(transform=...)`` takes, as scikit-learn's transformers do.
TRANSFORM_OUTPUTS = ("default", "pandas", "polars")
#: The implicit library's constructor arguments that gpu-als spells otherwise: what to
#: pass instead (ALS refuses them, saying so).
IMPLICIT_ARGUMENTS = {
    "use_gpu": "backend='gpu' or backend='cpu' (default 'auto': the GPU when one is usable)",
    "use_cg": "solver='cg' (cg_steps=3 as in implicit) for use_cg=True, "
              "solver='cholesky' (the default, exact) for use_cg=False",
    "use_native": "nothing to pass: the CPU backend is vectorized NumPy",
    "num_threads": "backend=gpu_als.backends.CPUBackend(num_threads=n)",
}
#: Spark MLlib's ALS parameters that gpu-als spells otherwise (refused likewise).
SPARK_ARGUMENTS = {
    "rank": "factors=",
    "maxIter": "iterations=",
    "regParam": "regularization= (with feedback='explicit', Spark's implicitPrefs=False, "
                "the same penalty per rating)",
    "implicitPrefs": "feedback='implicit' (the default here) or feedback='explicit'",
    "nonnegative": "solver='nnls' for nonnegative=True",
    "seed": "random_state=",
}
#: Tag and version of the files written by ALS.save.
FILE_FORMAT = "gpu-als model"
FILE_VERSION = 1


class ALS:
    """Matrix factorization by Alternating Least Squares, on the CPU or a CUDA GPU.

    Factorizes a sparse users x items matrix ``R ~ X Y^T``. With ``feedback="implicit"``
    (Hu, Koren & Volinsky 2008) a stored value ``r`` is an amount of interaction: the
    preference is ``p = [r > 0]`` and the confidence ``c = 1 + alpha * |r|`` (or
    ``1 + alpha * log(1 + |r| / epsilon)``); unstored entries have ``p = 0, c = 1``, and a
    negative value means "disliked". With ``feedback="explicit"`` (ALS-WR, Zhou et al. 2008,
    as Spark MLlib) stored values are ratings, unstored ones are unknown, and each row's
    regularization is scaled by its number of ratings. A stored 0 is a rating of 0 (a
    ``R.data[R.data < 3] = 0`` keeps its entries: ``R.eliminate_zeros()`` makes them
    unknown); with implicit feedback it is the same as no entry.

    Parameters
    ----------
    factors : int, default 64
        Number of latent factors ``k``.
    regularization : float or None, default None
        ``lambda``, the L2 penalty (>= 0; > 0 for explicit feedback). None: 0.01 for
        implicit feedback (the implicit library's default) and 0.1 for explicit feedback
        (Spark MLlib's, for the same penalty per rating), see
        :data:`DEFAULT_REGULARIZATION`: a ratings model at 0.01 overfits.
    alpha : float, default 10.0
        Confidence scaling for implicit feedback (>= 0). Ignored for explicit feedback.
    iterations : int, default 15
        Full sweeps (a user half-step then an item half-step); 0 leaves the random start.
    feedback : {"implicit", "explicit"}, default "implicit"
    scale_regularization : bool or None, default None
        Multiply each user's and item's ``regularization`` by its number of entries (the
        weighted-lambda regularization of ALS-WR, Zhou et al. 2008): its ratings
        (explicit feedback), or its positive entries (implicit). None: True for explicit
        feedback (ALS-WR, as Spark MLlib; False is refused there), False for implicit (Hu
        et al., as the implicit library). True with implicit feedback is Spark MLlib's
        implicit model (``implicitPrefs=True``), which counts positive entries too: a
        user or item with none (only dislikes) has the factors 0. ``solver="pcg"``
        then preconditions each row by its own ``Y^T Y + regularization * n_u * I``.
    confidence : {"linear", "log"}, default "linear"
        How implicit values become confidences (see above). ``"log"`` (Hu et al.'s
        alternative) keeps heavy-tailed counts, such as play counts, from letting a few
        huge values dominate, and keeps the CG solvers near the exact solution there.
    epsilon : float, default 1.0
        Scale of the "log" confidence.
    solver : {"cholesky", "cg", "pcg", "nnls"}, default "cholesky"
        ``"cholesky"`` solves every row's system exactly; ``"cg"`` runs ``cg_steps``
        conjugate-gradient steps per half-step from the previous factors (Takacs et al.
        2011, the implicit library's default): cheaper per iteration, approximate.
        ``"pcg"``: as many steps of CG preconditioned by the part every row's system
        shares, ``Y^T Y + regularization * I`` (taken on the factors whitened by its
        Cholesky factor, so a step costs no more than CG's): on 0/1 data, ratings and
        small confidences mostly nearer the exact solution in as many steps (the
        benchmark's MovieLens 100K fits, 15 iterations of 3 steps at 32 to 256 factors:
        at most 0.04 % above the exact solver's training loss, 0.5 % below it at 256,
        where CG's end up to 2.8 % above; at 64 factors CG's were the nearer, 0.02 %
        above against 0.03 %), but farther on heavy-tailed counts with large linear
        confidences (play counts at alpha 40: 13.8 % above the exact loss after 10
        iterations, CG 3.6 %; ``benchmarks/preconditioned_cg.py``); it does not repeat
        implicit's iterates as ``"cg"`` does. With explicit feedback that shared part is
        ``regularization * n_u * I`` and ``"pcg"`` takes CG's steps.
        ``"nnls"``: nonnegative factors (Spark MLlib's ``nonnegative=True``): every row's
        system solved exactly under the constraint ``x >= 0``, by block principal
        pivoting (:mod:`gpu_als.backends.nnls`); a few exact solves per row, so slower
        than ``"cholesky"``. Fold-ins (``recalculate_user``, ``partial_fit_*``,
        ``transform``) solve the same constrained problem. Needs ``regularization > 0``.
    cg_steps : int, default 3
        Conjugate-gradient steps per row and half-step (``solver="cg"`` or ``"pcg"``).
    dtype : float32 or float64, default float32
        dtype of the factors and of the computation.
    backend : {"auto", "cpu", "gpu"} or Backend, default "auto"
        ``"auto"`` uses the GPU when CuPy sees a usable one, else the CPU, and logs which.
    random_state : int, numpy.random.Generator or None
        Seed of the initial factors.
    warm_start : bool, default False
        When the model is already fitted, ``fit`` starts from its current factors instead
        of random ones (scikit-learn's ``warm_start``; the implicit library's ``fit``
        always does this): more iterations continue a fit, and a refit on updated
        interactions starts near its answer. A matrix must have the model's shape (its row
        ``u`` is the model's row ``u``); a DataFrame, or a matrix given with ``fit``'s
        ``user_ids`` and ``item_ids``, is matched to the model's ``user_ids_`` and
        ``item_ids_`` by id, and ids new to the model start random. ``loss_history_``
        then holds this fit's iterations.
    show_progress : bool, default True
        Show a progress bar while fitting (only on a terminal).
    calculate_training_loss : bool, default True
        Compute the training loss after every iteration (``loss_history_``, the progress
        bar, the callback's ``loss``); it also finds the first half-step that produced NaN
        or infinite factors. With False no loss is computed (about 10 % of an iteration on
        the CPU), the GPU queues iterations without waiting for them, and non-finite
        factors are found once, at the end of ``fit``.
    callback : callable, optional
        Called after every iteration as ``callback(iteration, elapsed_seconds, loss)``
        (``loss`` is None when ``calculate_training_loss=False``). While it runs, the model
        is that of the iterations so far, so that it can be queried or evaluated (e.g.
        Recall@10 after each iteration), not changed (``fit``, ``set_params`` and the
        partial fits raise ``RuntimeError``); its factor arrays change as the fit goes on
        (copy them to keep them), and a fit that then fails or is interrupted leaves the
        model as it was before ``fit``. Returning ``True`` stops the fit after this iteration,
        the model staying as the callback left it (see
        :class:`gpu_als.evaluation.EarlyStopping`); any other return value is ignored, as
        in the implicit library.

    Any other keyword is refused with a TypeError that names gpu-als's spelling of the
    implicit library's own (``use_gpu``, ``use_cg``, ``use_native``, ``num_threads``: see
    :data:`IMPLICIT_ARGUMENTS`) or the closest parameter name.

    Attributes
    ----------
    user_factors_ : array, shape (n_users, factors)
        ``X``; a NumPy array (CPU backend) or a CuPy array (GPU backend).
    item_factors_ : array, shape (n_items, factors)
        ``Y``.
    loss_history_ : list of float
        The training loss (DESIGN.md section 1) after each iteration; empty when
        ``calculate_training_loss=False``.
    backend_ : str
        The backend that holds the model: "cpu" or "gpu".
    user_ids_, item_ids_ : numpy.ndarray or None
        Original ids of the factor rows: ``user_ids_[u]`` is row ``u``'s. Set by ``fit`` on
        a DataFrame or with ``user_ids`` / ``item_ids``, and by :meth:`load` of a file
        saved with them (see :meth:`save`); None after ``fit`` on a matrix without them.
        :meth:`user_rows` / :meth:`item_rows` go the other way, from ids to rows.
    fit_in_progress : bool
        True while a fit of this model runs (so while its ``callback`` is called): a
        callback made for one model can check that it is that model's fit that calls it,
        as :class:`~gpu_als.evaluation.EarlyStopping` does.
    n_features_in_ : int
        The number of items, scikit-learn's name for the input's columns. With
        ``fit_transform`` / ``transform``, :meth:`get_feature_names_out` and
        :meth:`set_output`, the model is a step of a scikit-learn ``Pipeline`` (users'
        interactions in, their factors out) that ``GridSearchCV`` can tune.

    To change the factors, assign new arrays (``model.item_factors = Y``, or
    :meth:`from_factors`) rather than editing them in place: queries keep values derived
    from them (``Y^T Y`` for fold-in, the norms for ``similar_items``), as the implicit
    library does, and an edit in place leaves those stale.

    Examples
    --------
    >>> import scipy.sparse as sp
    >>> from gpu_als import ALS
    >>> R = sp.random(50, 40, density=0.1, format="csr", random_state=0)
    >>> model = ALS(factors=8, iterations=5, backend="cpu", random_state=0,
    ...             show_progress=False).fit(R)
    >>> model.user_factors_.shape, len(model.loss_history_)
    ((50, 8), 5)
    >>> ids, scores = model.recommend(0, R[0], N=3)
    >>> ids.shape, bool(scores[0] >= scores[-1])
    ((3,), True)
    >>> similar, cosines = model.similar_items(5, N=2)
    >>> int(similar[0]), round(float(cosines[0]), 6)  # an item is its own best match
    (5, 1.0)

    A DataFrame of (user, item, value) rows keeps its ids:

    >>> import pandas as pd
    >>> df = pd.DataFrame({"user": ["ann", "bob", "ann"], "item": ["x", "y", "y"]})
    >>> model = ALS(factors=2, iterations=2, backend="cpu", show_progress=False).fit(df)
    >>> list(model.user_ids_), list(model.item_ids_)
    (['ann', 'bob'], ['x', 'y'])
    """

    # Learned state (see Attributes), set by fit or load; absent until then.
    user_factors_: Any
    item_factors_: Any
    loss_history_: list[float]
    backend_: str
    user_ids_: np.ndarray | None
    item_ids_: np.ndarray | None

    def __init__(
        self,
        factors: int = 64,
        regularization: float | None = None,
        alpha: float = 10.0,
        iterations: int = 15,
        *,
        feedback: str = "implicit",
        scale_regularization: bool | None = None,
        confidence: str = "linear",
        epsilon: float = 1.0,
        solver: str = "cholesky",
        cg_steps: int = 3,
        dtype: Any = np.float32,
        backend: str | Backend = "auto",
        random_state: int | np.random.Generator | None = None,
        warm_start: bool = False,
        show_progress: bool = True,
        calculate_training_loss: bool = True,
        callback: Callable[[int, float, float | None], Any] | None = None,
        **unknown: Any,
    ):
        if unknown:
            raise TypeError(self._unknown_parameter(next(iter(unknown))))
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.feedback = feedback
        self.scale_regularization = scale_regularization
        self.confidence = confidence
        self.epsilon = epsilon
        self.solver = solver
        self.cg_steps = cg_steps
        self.dtype = dtype
        self.backend = backend
        self.random_state = random_state
        self.warm_start = warm_start
        self.show_progress = show_progress
        self.calculate_training_loss = calculate_training_loss
        self.callback = callback

    # ---- scikit-learn conventions ---------------------------------------------------

    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [name for name, p in signature.parameters.items()
                if name != "self" and p.kind is not p.VAR_KEYWORD]

    @classmethod
    def _param_defaults(cls) -> dict[str, Any]:
        """Each hyperparameter's default, as ``__init__`` has it."""
        parameters = inspect.signature(cls.__init__).parameters
        return {name: parameters[name].default for name in cls._param_names()}

    @classmethod
    def _unknown_parameter(cls, name: str) -> str:
        """Why ``name`` is not a parameter, and what to pass instead."""
        name = str(name)  # (NumPy's str_ named as Python's)
        if name in IMPLICIT_ARGUMENTS:
            return (f"{name!r} is the implicit library's argument; in gpu-als: "
                    f"{IMPLICIT_ARGUMENTS[name]}")
        if name in SPARK_ARGUMENTS:
            return (f"{name!r} is Spark MLlib's parameter; in gpu-als: "
                    f"{SPARK_ARGUMENTS[name]}")
        valid = cls._param_names()
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown parameter {name!r}{hint}; the parameters: {', '.join(valid)}"

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyperparameters, as passed to ``__init__``."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> ALS:
        """Set hyperparameters by name; returns ``self``. Not during a fit of the model
        (from its callback): the fit goes on with the ones it started with."""
        self._refuse_while_fitting("set_params()")
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(self._unknown_parameter(name))
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = self._param_defaults()
        shown = [
            f"{name}={value!r}" for name, value in self.get_params().items()
            if not _same(value, defaults.get(name))
        ]
        return f"{type(self).__name__}({', '.join(shown)})"

    def _check_params(self) -> dict[str, Any]:
        """Validate every hyperparameter; return them normalized."""
        if isinstance(self.iterations, (type, np.dtype)):  # ALS(64, 0.01, 1.0, np.float32)
            raise TypeError(f"iterations must be an integer, got the dtype {self.iterations!r}: "
                            f"the 4th argument of implicit's AlternatingLeastSquares is its "
                            f"dtype, and gpu-als's is iterations; pass dtype= by name")
        feedback = data.check_choice("feedback", self.feedback, data.FEEDBACKS)
        p = {
            "factors": data.check_int("factors", self.factors, minimum=1),
            "iterations": data.check_int("iterations", self.iterations, minimum=0),
            "regularization": DEFAULT_REGULARIZATION[feedback] if self.regularization is None
            else data.check_float("regularization", self.regularization),
            "alpha": data.check_float("alpha", self.alpha),
            "epsilon": data.check_float("epsilon", self.epsilon, strict=True),
            "feedback": feedback,
            "confidence": data.check_choice("confidence", self.confidence, data.CONFIDENCES),
            "solver": data.check_choice("solver", self.solver, SOLVERS),
            "cg_steps": data.check_int("cg_steps", self.cg_steps, minimum=1),
            "dtype": data.check_dtype(self.dtype),
        }
        scaled = self.scale_regularization
        p["scale_regularization"] = feedback == "explicit" if scaled is None else \
            data.check_bool("scale_regularization", scaled)
        if feedback == "explicit" and not p["scale_regularization"]:
            raise ValueError("scale_regularization=False with feedback='explicit': explicit "
                             "feedback is ALS-WR here, whose penalty is scaled by each "
                             "row's number of ratings; leave it None (or True)")
        if p["solver"] == "nnls" and p["regularization"] == 0:
            raise ValueError(
                "regularization=0 with solver='nnls': its active-set solves need every "
                "row's system positive definite; use regularization > 0")
        if p["feedback"] == "explicit" and p["regularization"] == 0:
            raise ValueError(
                "regularization=0 with feedback='explicit': a user or item with fewer ratings "
                "than factors then has no unique solution; use regularization > 0"
            )
        if not isinstance(self.backend, Backend):
            data.check_choice("backend", self.backend, BACKEND_NAMES)
        for name in ("calculate_training_loss", "warm_start", "show_progress"):
            p[name] = data.check_bool(name, getattr(self, name))
        data.check_random_state(self.random_state)
        if self.callback is not None:
            check_callback(self.callback)
        return p

    # ---- training -------------------------------------------------------------------

    def fit(self, user_items: Any, show_progress: bool | None = None,
            callback: Callable | None = None, *, user_ids: Any = None,
            item_ids: Any = None) -> ALS:
        """Learn user and item factors from a users x items matrix.

        Parameters
        ----------
        user_items : scipy.sparse matrix or array, shape (n_users, n_items), or DataFrame
            Interaction amounts (implicit) or ratings (explicit); any sparse format, any
            real dtype (a CuPy sparse matrix is copied to the host for the checks). A
            pandas or polars DataFrame has one row per interaction in columns
            ``user``, ``item`` and (optionally) ``value``: it goes through
            :func:`gpu_als.data.from_dataframe`, and ``user_ids_`` / ``item_ids_`` then map
            factor rows to its ids (other column names: call ``from_dataframe`` and pass
            its ids below).
        show_progress, callback : optional
            For this fit, instead of the estimator's own (the implicit library's ``fit``
            arguments).
        user_ids, item_ids : array-like, shape (n_users,) and (n_items,), optional
            The original ids of a matrix's rows and columns (as :func:`from_dataframe
            <gpu_als.data.from_dataframe>` returns them): kept as ``user_ids_`` and
            ``item_ids_``, and what ``warm_start`` matches the model's rows by. A
            DataFrame's come from its columns.

        Returns
        -------
        self

        Raises
        ------
        TypeError, ValueError
            For bad hyperparameters or input (see :func:`gpu_als.data.check_user_items`).
        BackendUnavailableError
            For ``backend="gpu"`` where no GPU backend can run.
        FloatingPointError
            When a half-step produces NaN or infinite factors; the model is left as it was
            (unfitted, or with its previous fit).
        RuntimeError
            When called while a fit of this model is in progress (from its callback).
        """
        if callback is not None:
            check_callback(callback)
        if show_progress is not None:
            if hasattr(show_progress, "__len__") and not isinstance(show_progress, str):
                # fit(X, y), as a scikit-learn Pipeline calls its last step
                raise TypeError(
                    f"fit's second argument is show_progress (the implicit library's "
                    f"order), got {type(show_progress).__name__}: ALS learns from "
                    f"user_items alone and takes no targets y (in a scikit-learn Pipeline, "
                    f"put it before the step that uses them)")
            data.check_bool("show_progress", show_progress)
        callback = self.callback if callback is None else callback
        user_items, ids = self._fit_input(user_items, user_ids, item_ids)
        training = Training(self, user_items, ids)
        with self._fitting():
            stopped = training.run(
                training.p["iterations"],
                show_progress=self.show_progress if show_progress is None else show_progress,
                callback=None if callback is None else training.reporting(self, callback))
        if not stopped:  # else the model is as the callback that stopped the fit left it
            training.finish(self)
        return self

    @contextlib.contextmanager
    def _fitting(self):
        """The iterations of a fit: :attr:`fit_in_progress` is true within the block (for a
        callback to check that the model it watches is the one being fitted), and the
        model is left as it was before the block if the block raises (also when
        interrupted): a fit shows its callback the model so far, and must not leave it
        half-trained."""
        self._refuse_while_fitting("fit()")
        saved = dict(self.__dict__)
        self.__dict__["_fit_in_progress"] = threading.get_ident()  # the fitting thread
        try:
            yield
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise
        finally:
            self.__dict__.pop("_fit_in_progress", None)

    @property
    def fit_in_progress(self) -> bool:
        """Whether a fit of this model is running (true while its callback is called)."""
        return bool(self.__dict__.get("_fit_in_progress", False))

    def _refuse_while_fitting(self, call: str) -> None:
        """A ``RuntimeError`` for ``call``, a change of the model, while it is being fitted
        (from the fit's callback, or another thread): the fit would go on from what it
        had, and then overwrite the change or hold hyperparameters it was not fitted
        with."""
        if not self.fit_in_progress:
            return
        where = "in another thread: queries may run meanwhile, not changes" \
            if self.__dict__["_fit_in_progress"] != threading.get_ident() else \
            "(called from its callback?): a callback may query the model, not change it"
        raise RuntimeError(f"{call} while a fit of this model is in progress {where}; call "
                           f"{call} once the fit has returned")

    def _fit_input(self, user_items: Any, user_ids: Any, item_ids: Any
                   ) -> tuple[Any, tuple[Any, Any]]:
        """``fit``'s interactions and their (user ids, item ids): a DataFrame's through
        :func:`gpu_als.data.frame_interactions`, a matrix's as given."""
        if not data.is_dataframe(user_items):
            return user_items, (user_ids, item_ids)
        refuse_ids_with_frame(user_ids, item_ids)
        matrix, user_ids, item_ids = data.frame_interactions(
            user_items, self.feedback, data.check_dtype(self.dtype),
            dask_hint=", or fit it on its cluster, whose workers read it: "
                      "gpu_als.distributed.fit_distributed(model, df, client)")
        return matrix, (user_ids, item_ids)

    def _initial_factors(self, backend: Backend, shape, factors: int, dtype,
                         ids: tuple[Any, Any] = (None, None)):
        """The factors a fit of a ``shape`` matrix starts from, on ``backend``: random, or
        with ``warm_start`` on a fitted model its current ones, matched to the data's rows
        by ``ids`` (the data's user and item ids, or None: see :func:`_warm_rows`)."""
        # Drawn on the host in the model's dtype, users first: the same start on every
        # backend, and the implicit library's start for the same integer seed.
        rng = np.random.default_rng(self.random_state)
        X = rng.random((shape[0], factors), dtype=dtype) * dtype.type(INIT_SCALE)
        Y = rng.random((shape[1], factors), dtype=dtype) * dtype.type(INIT_SCALE)
        if self.warm_start and (hasattr(self, "user_factors_") or hasattr(self, "item_factors_")):
            self._check_fitted()
            for start, current, data_ids, model_ids, what in (
                    (X, self.user_factors_, ids[0], self.user_ids_, "users"),
                    (Y, self.item_factors_, ids[1], self.item_ids_, "items")):
                _warm_rows(start, self._backend.to_numpy(current), data_ids, model_ids, what)
        return backend.asarray(X), backend.asarray(Y)

    # ---- queries --------------------------------------------------------------------

    def _check_fitted(self) -> None:
        """Raise :class:`NotFittedError` before ``fit``; check factors assigned by hand
        (once per assignment) and put them on the backend."""
        missing = [name for name in ("user_factors_", "item_factors_")
                   if not hasattr(self, name)]
        if len(missing) == 2:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(user_items) first, "
                f"or build a model from factors with {type(self).__name__}.from_factors"
            )
        if missing:
            raise NotFittedError(f"{missing[0]} is not set: a model needs both user and item "
                                 f"factors (or use {type(self).__name__}.from_factors)")
        if self.__dict__.get("_factor_ids") != (id(self.user_factors_), id(self.item_factors_)):
            self._adopt_factors()

    def _adopt_factors(self) -> None:
        """Factors assigned by hand (``model.user_factors = X``): checked as
        :meth:`from_factors` checks them, in the model's dtype, on its backend."""
        p = self._check_params()
        X, Y = _in_dtype(*_host_factors(self.user_factors_, self.item_factors_), p["dtype"])
        backend = self.__dict__.get("_backend") or get_backend(self.backend)
        self._set_fitted(backend, X, Y, getattr(self, "loss_history_", []),
                         _ids.checked_ids(self._own_ids("user"), len(X), "user_ids_"),
                         _ids.checked_ids(self._own_ids("item"), len(Y), "item_ids_"))

    @property
    def user_factors(self):
        """Alias of ``user_factors_`` (the implicit library's name). Assigning factors
        (to either name) is allowed: they are checked, and put on the model's backend in
        its dtype, at the next query."""
        self._check_fitted()
        return self.user_factors_

    @user_factors.setter
    def user_factors(self, value) -> None:
        self.user_factors_ = value

    @property
    def item_factors(self):
        """Alias of ``item_factors_`` (the implicit library's name); see ``user_factors``."""
        self._check_fitted()
        return self.item_factors_

    @item_factors.setter
    def item_factors(self, value) -> None:
        self.item_factors_ = value

    def user_rows(self, ids: Any):
        """The factor rows of original user ids (those in :attr:`user_ids_`), ``-1`` for
        an id the model does not have: ``recommend(model.user_rows(ids), ...)``.

        Numbers match numbers (``5`` matches ``5.0``); otherwise ids are compared as
        strings, as :func:`gpu_als.data.id_positions` compares them. The lookup is built
        on the first call and kept while ``user_ids_`` is the same array (partial fits by
        id extend it): one id among 138,000 string ids takes 4-6 us a call after a first
        of 55-60 ms, where ``id_positions(model.user_ids_, ids)`` takes 60-70 ms every time
        (``python benchmarks/bench_ids.py``). The
        lookup is a Python dict of about 120 bytes per id (measured at a million ids,
        strings or integers), kept with the model (not pickled or saved).

        Parameters
        ----------
        ids : id or array-like of ids

        Returns
        -------
        int or numpy.ndarray of int64, shape (n,)

        Raises
        ------
        ValueError
            When the model has no ``user_ids_`` (fitted on a matrix without ids).

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"user": ["ann", "bob", "bob"], "item": ["x", "x", "y"]})
        >>> model = ALS(factors=2, iterations=2, backend="cpu", show_progress=False).fit(df)
        >>> model.user_rows(["bob", "zoe"]), model.item_rows("y")
        (array([ 1, -1]), 1)
        """
        return self._rows_of("user", ids)

    def item_rows(self, ids: Any):
        """The factor rows of original item ids (those in :attr:`item_ids_`), ``-1`` for
        an id the model does not have; the item-side twin of :meth:`user_rows`."""
        return self._rows_of("item", ids)

    def _rows_of(self, side: str, ids: Any):
        self._check_fitted()
        ids = data.id_array(ids)
        if ids.ndim > 1:
            raise ValueError(f"ids must be one id or 1-D, got shape {ids.shape}")
        rows = self._id_index(side).positions(ids.reshape(-1))
        return int(rows[0]) if ids.ndim == 0 else rows

    def recalculate_user(self, userid: Any, user_items: Any):
        """Factors for users from their interactions, against the fixed item factors.

        One exact solve per user (the user half-step for just these rows, always with the
        Cholesky solver); the model is not changed.

        Parameters
        ----------
        userid : int or array-like of int
            Used only for the shape of the result (scalar: 1-D, array: 2-D).
        user_items : scipy.sparse matrix, shape (n_users_given, n_items)
            The users' interactions, one row per id.

        Returns
        -------
        array, shape (factors,) or (n_users_given, factors)
        """
        self._check_fitted()
        ids, scalar = _as_ids(userid, "userid")
        out = self._fold_in(user_items, self.item_factors_, len(ids), "user_items")
        return out[0] if scalar else out

    def recalculate_item(self, itemid: Any, item_users: Any):
        """Factors for items from their interactions, against the fixed user factors.

        The item-side twin of :meth:`recalculate_user`.

        Parameters
        ----------
        itemid : int or array-like of int
        item_users : scipy.sparse matrix, shape (n_items_given, n_users)
            The items' interactions, one row per id (a row of ``R^T``).

        Returns
        -------
        array, shape (factors,) or (n_items_given, factors)
        """
        self._check_fitted()
        ids, scalar = _as_ids(itemid, "itemid")
        out = self._fold_in(item_users, self.user_factors_, len(ids), "item_users")
        return out[0] if scalar else out

    def transform(self, user_items: Any):
        """The factors of the users whose interactions are the rows of ``user_items``,
        solved against the fitted item factors as :meth:`recalculate_user` solves them
        (scikit-learn's ``transform``, as its ``NMF`` and ``TruncatedSVD`` have it). The
        model is not changed.

        Parameters
        ----------
        user_items : scipy.sparse matrix, shape (n_rows, n_items)
            Columns as the model's items (for a DataFrame: ``from_dataframe(df,
            item_ids=model.item_ids_, drop_unknown=True)``); rows may be any users.

        Returns
        -------
        array, shape (n_rows, factors), on the model's backend (an empty row: zeros): a
            CuPy array for a GPU model, which scikit-learn's estimators after it in a
            ``Pipeline`` do not take (:meth:`set_output` with ``transform="pandas"``
            hands them a DataFrame on the host instead)
        """
        self._check_fitted()
        R = data.check_user_items_allow_empty(data.as_row_matrix(user_items),
                                              self.item_factors_.dtype, name="user_items",
                                              copy=False)
        if R.shape[1] != self.item_factors_.shape[0]:
            raise ValueError(f"user_items has {data.counted(R.shape[1], 'column')}, but the "
                             f"model has {data.counted(self.item_factors_.shape[0], 'item')}: "
                             f"one column per item")
        factors = self._fold_in_checked(R, self.item_factors_, given=(user_items, "user_items"))
        return self._transform_output(factors)

    def fit_transform(self, user_items: Any, y: Any = None, **fit_params: Any):
        """``fit(user_items, **fit_params)``, then the fitted ``user_factors_``
        (scikit-learn's ``fit_transform``). ``y`` is ignored: a scikit-learn ``Pipeline``
        passes its targets to every step, and ALS learns from ``user_items`` alone."""
        return self._transform_output(self.fit(user_items, **fit_params).user_factors_)

    def set_output(self, *, transform: str | None = None) -> ALS:
        """scikit-learn's ``set_output``: with ``transform="pandas"`` (or ``"polars"``),
        :meth:`transform` and :meth:`fit_transform` return a DataFrame whose columns are
        :meth:`get_feature_names_out`'s (on the host, for a GPU model); ``"default"``
        returns arrays again, and None leaves the setting as it is. Unset, scikit-learn's
        ``set_config(transform_output=...)`` decides, as it does for its own
        transformers. Returns ``self``."""
        if transform is not None:
            data.check_choice("transform", transform, TRANSFORM_OUTPUTS)
            self._sklearn_output_config = {"transform": transform}  # the name clone() copies
        return self

    def _transform_output(self, factors):
        """``factors`` (rows of users) as :meth:`set_output` asks."""
        output = getattr(self, "_sklearn_output_config", {}).get("transform", "default")
        sklearn = sys.modules.get("sklearn")  # its set_config, where it is in use
        if output == "default" and sklearn is not None:
            output = sklearn.get_config().get("transform_output", "default")
        if output == "default":
            return factors
        frames = data.optional_module(output)
        if frames is None:
            raise ImportError(f"set_output(transform={output!r}) returns a DataFrame of "
                              f"{output}: pip install {output}")
        values, columns = self._backend.to_numpy(factors), self.get_feature_names_out()
        if output == "polars":
            return frames.DataFrame(values, schema=list(columns))
        return frames.DataFrame(values, columns=columns)

    @property
    def n_features_in_(self) -> int:
        """The number of items: the columns of the matrix ``fit`` and ``transform`` take
        (scikit-learn's name, which a ``Pipeline`` reports of its first step)."""
        self._check_fitted()
        return int(self.item_factors_.shape[0])

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """The names of :meth:`transform`'s columns, ``als0`` to ``als{factors-1}``
        (scikit-learn's convention, as its ``NMF`` names its components).

        Parameters
        ----------
        input_features : array-like of str, optional
            The names of the items (the input's columns); only their number is checked,
            since each output column mixes every item.
        """
        n_items = self.n_features_in_
        if input_features is not None and len(input_features) != n_items:
            raise ValueError(f"input_features has {len(input_features)} names, but the model "
                             f"has {n_items} items: one name per item")
        prefix = type(self).__name__.lower()
        factors = self.item_factors_.shape[1]
        return np.asarray([f"{prefix}{i}" for i in range(factors)], dtype=object)

    def __sklearn_tags__(self):
        """What scikit-learn's meta-estimators (``Pipeline``, ``GridSearchCV``) read of an
        estimator (scikit-learn 1.6 and later): a transformer of sparse matrices (a dense
        array is refused) that needs no targets. Called by scikit-learn only, so it
        imports it here."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(),
                    input_tags=InputTags(sparse=True, two_d_array=False))

    def partial_fit_users(self, userids: Any = None, user_items: Any = None, *,
                          user_ids: Any = None) -> ALS:
        """Add new users, or update existing ones, without refitting.

        Each given user's factors are solved exactly from ``user_items`` against the fixed
        item factors. Users are named by factor row (``userids``) or, for a model with
        :attr:`user_ids_` (fitted on a DataFrame or with ``fit(..., user_ids=...)``), by
        original id (``user_ids``).

        - By row: rows at or beyond the current number of users grow ``user_factors_``;
          users in a gap that were not given get zero factors (all their scores are 0
          until they are fitted). Growing this way drops ``user_ids_`` (set to None): the
          new rows have no original ids; updating existing rows keeps it.
        - By id: a known id updates its row; the new ids get new rows after the last one,
          in the order given, and are appended to ``user_ids_``.

        Growing reserves an eighth more rows than it needs (:data:`SPARE_ROWS`, not part of
        ``user_factors_`` or ``user_ids_``), so users streamed in a few per call copy the
        factors and ids once per eighth of growth. One new user a call into 138,000 x 64
        factors took 6 ms by row when the factors were copied each time, and takes 0.2-0.3
        ms by row or by id now; by id with a million string ids, 0.24 ms where copying the
        ids took 8.7 (``python benchmarks/bench_ids.py [--users 1000000]``). Nothing changes
        when an argument is refused. Partial fits called from several threads take turns;
        queries running meanwhile see the model of before or after each. Returns ``self``.

        A DataFrame of (user, item[, value]) rows, as ``fit(df)`` reads them, may be given
        alone instead (``model.partial_fit_users(today)``): its users by id, its items by
        the model's ids. Its rows of items the model lacks are left out, and so are its
        users left without rows (a known one keeps its factors), each with a warning
        that counts them.

        Parameters
        ----------
        userids : array-like of int, shape (n,), or DataFrame, optional
            Distinct factor rows, >= 0. Give this or ``user_ids``; or the DataFrame alone.
        user_items : scipy.sparse matrix, shape (n, n_items)
            The users' interactions, one row per user given; its columns are the model's
            item rows (``from_dataframe(df, item_ids=model.item_ids_)`` builds it from a
            DataFrame).
        user_ids : array-like, shape (n,), optional
            Distinct original ids, of the kind of ``user_ids_`` (numbers or strings).

        Examples
        --------
        >>> import pandas as pd
        >>> from gpu_als.data import from_dataframe
        >>> df = pd.DataFrame({"user": ["ann", "bob", "bob"], "item": ["x", "x", "y"]})
        >>> model = ALS(factors=2, iterations=2, backend="cpu", show_progress=False).fit(df)
        >>> new = pd.DataFrame({"user": ["cy", "ann"], "item": ["y", "y"]})
        >>> rows, users, _ = from_dataframe(new, item_ids=model.item_ids_)
        >>> list(model.partial_fit_users(user_items=rows, user_ids=users).user_ids_)
        ['ann', 'bob', 'cy']
        >>> list(model.partial_fit_users(pd.DataFrame({"user": ["dee"], "item": ["x"]}))
        ...      .user_ids_)  # the same from the DataFrame alone
        ['ann', 'bob', 'cy', 'dee']
        """
        return self._partial_fit_side("user", userids, user_items, user_ids)

    def partial_fit_items(self, itemids: Any = None, item_users: Any = None, *,
                          item_ids: Any = None) -> ALS:
        """Add new items, or update existing ones, without refitting.

        The item-side twin of :meth:`partial_fit_users`; ``item_users`` has one row per
        item given and one column per user row, and ``item_ids`` names items by their
        original ids in :attr:`item_ids_`. A DataFrame of (user, item[, value]) rows
        given alone adds or updates its items by id, their users found by the model's
        ids. Returns ``self``.
        """
        return self._partial_fit_side("item", itemids, item_users, item_ids)

    def _partial_fit_side(self, side: str, rows: Any, matrix: Any, ids: Any) -> ALS:
        """:meth:`partial_fit_users` (``side`` "user") or :meth:`partial_fit_items`.

        Partial fits from several threads (a server folding in users per request) take
        turns, each growing the factors and ids that the one before left: unlocked, two
        growths at once could each copy the old rows and one of them be lost. Queries
        do not wait: they see the factors of before or after a partial fit."""
        self._refuse_while_fitting(f"partial_fit_{side}s()")
        with self.__dict__.setdefault("_update_lock", threading.RLock()):
            if data.is_dataframe(rows) or data.is_dataframe(matrix):
                # (in the lock: the other side's ids, its columns, must not grow meanwhile)
                matrix, ids = self._frame_rows(side, rows, matrix, ids)
                rows = None
            return self._partial_fit_side_unlocked(side, rows, matrix, ids)

    def _frame_rows(self, side: str, rows: Any, matrix: Any, ids: Any) -> tuple[Any, Any]:
        """A partial fit's DataFrame (given as ``rows`` or ``matrix``, alone) as the
        matrix of its ``side``'s rows against the model's other side and their ids: rows
        of the other side's ids the model lacks, and then the ``side``'s ids without
        rows, left out with a warning that counts them."""
        other, rows_name, matrix_name = _side_names(side)
        df = rows if data.is_dataframe(rows) else matrix
        if (matrix if df is rows else rows) is not None or ids is not None:
            raise TypeError(f"partial_fit_{side}s() takes a DataFrame alone (its {side}s by "
                            f"id, in its column '{side}'), or {rows_name} / {side}_ids with "
                            f"the matrix {matrix_name}")
        self._check_fitted()
        df = data._eager_frame(df)  # (a pyarrow or cuDF table read once, as pandas)
        if self.feedback == "explicit" and "value" not in df.columns:
            raise ValueError(f"partial_fit_{side}s(df) with feedback='explicit' reads the "
                             f"ratings in the column 'value', which df lacks")
        R, frame_ids, unknown = _id_queries.rows_against(
            df, side, other, "value", _id_queries.lookup(self, other), feedback=self.feedback,
            dtype=self.dtype)
        if unknown:
            warnings.warn(f"{unknown} of the rows of df name {other}s the model lacks: left "
                          f"out", UserWarning, stacklevel=data.user_stacklevel())
        kept = R.getnnz(axis=1) > 0
        if not kept.any():
            raise ValueError(f"df has no rows of {other}s the model has: no {side} to fit")
        if not kept.all():
            left = frame_ids[~kept]
            warnings.warn(f"{len(left)} {side}(s) of df name only {other}s the model lacks: "
                          f"not fitted ({_id_queries.examples(left)})", UserWarning,
                          stacklevel=data.user_stacklevel())
        return R[kept], frame_ids[kept]

    def _partial_fit_side_unlocked(self, side: str, rows: Any, matrix: Any, ids: Any) -> ALS:
        self._check_fitted()
        other, rows_name, matrix_name = _side_names(side)
        ids_name = f"{side}_ids"
        method = f"partial_fit_{side}s()"
        known = getattr(self, f"{side}_ids_")
        factors = getattr(self, f"{side}_factors_")
        if matrix is None:
            raise TypeError(f"{method} needs {matrix_name}, one row per {side} given")
        if ids is None and rows is None:
            raise TypeError(f"{method} needs {rows_name} (factor rows) or {ids_name} "
                            f"(original ids)")
        if ids is not None:
            if rows is not None:
                raise ValueError(f"give {rows_name} (factor rows) or {ids_name} (original "
                                 f"ids), not both")
            index = self._id_index(side)
            rows, new_ids = _ids.rows_of_ids(index, ids, len(factors), side)
            new_ids = _ids.ids_to_append(known, new_ids, side)
        elif np.asarray(rows).dtype.kind in "OSU":
            raise TypeError(f"{rows_name} are factor rows, integers; to name {side}s by "
                            f"their original ids, pass them as {ids_name}=")
        factors = self._partial_fit(side, rows, matrix)
        setattr(self, f"{side}_factors_", factors)
        self._remember_factors(changed=factors)
        if ids is not None and len(new_ids):
            grown_ids = self._grown(known, len(known) + len(new_ids), f"{side}_ids_",
                                    np.result_type(known, new_ids))
            grown_ids[len(known):] = new_ids
            setattr(self, f"{side}_ids_", grown_ids)
            index.extend(grown_ids)
        elif known is not None and len(known) != len(factors):
            setattr(self, f"{side}_ids_", None)  # the id map no longer covers every row
        return self

    def _id_index(self, side: str) -> _ids.IdIndex:
        """The lookup of ``{side}_ids_``, kept while the array is the model's: partial fits
        by id extend it instead of hashing every id again."""
        ids = getattr(self, f"{side}_ids_")
        if ids is None:
            raise ValueError(
                f"the model has no {side}_ids_ to match ids against (fitted on a matrix "
                f"without ids, or grown by row): name its {side}s by factor row")
        indexes = self.__dict__.setdefault("_id_indexes", {})
        if side not in indexes or indexes[side].ids is not ids:
            indexes[side] = _ids.IdIndex(ids)
        return indexes[side]

    def _partial_fit(self, side: str, rows: Any, matrix: Any):
        """The ``side``'s factors with ``rows`` solved from ``matrix``, grown if needed."""
        other, rows_name, matrix_name = _side_names(side)
        factors = getattr(self, f"{side}_factors_")
        rows, _ = _as_ids(rows, rows_name)
        if len(rows) == 0:
            raise ValueError(f"{rows_name} is empty")
        if rows.min() < 0:
            raise ValueError(f"{rows_name} {int(rows.min())} is negative")
        if len(np.unique(rows)) != len(rows):
            raise ValueError(f"{rows_name} holds duplicates; give each id once")
        solved = self._fold_in(matrix, getattr(self, f"{other}_factors_"), len(rows),
                               matrix_name)
        norm = overflowing_norm(self._backend, solved)
        if norm is not None:  # (kept out of the model, as fit and from_factors keep them)
            dtype = np.dtype(solved.dtype)
            wider = " or use dtype=float64" if dtype == np.float32 else ""
            raise ValueError(f"the new {side} factors have rows of norm up to {norm:.3g}: "
                             f"their dot products (the scores) overflow {dtype.name}; scale "
                             f"the values of {matrix_name} down{wider}")
        if int(rows.max()) >= factors.shape[0]:
            factors = self._grown(factors, int(rows.max()) + 1, f"{side}_factors_")
        factors[self._backend.asarray(rows)] = solved
        return factors

    def _grown(self, array, n: int, name: str, dtype: Any = None):
        """The model's ``array`` (its attribute ``name``: factors or ids) with ``n`` rows,
        the new ones zero: the leading rows of a buffer with :data:`SPARE_ROWS` to spare,
        which the next growth of the same array fills without copying it (while the model
        still holds it). ``dtype`` (default the array's) may widen it: longer strings."""
        dtype = array.dtype if dtype is None else np.dtype(dtype)
        spare = self.__dict__.setdefault("_spare_rows", {})
        held, buffer = spare.get(name, (None, None))
        if held is not array or buffer.shape[0] < n or buffer.dtype != dtype:
            shape = (n + int(n * SPARE_ROWS),) + array.shape[1:]
            data.check_memory(math.prod(shape) * dtype.itemsize,
                              f"growing {name} to {n:,} rows", "; are the ids compact?")
            xp = np if isinstance(array, np.ndarray) else self._backend.xp
            buffer = xp.zeros(shape, dtype)
            buffer[:len(array)] = array
        grown = buffer[:n]  # rows past the old ones: zero, never handed out before
        spare[name] = (grown, buffer)
        return grown

    def _fold_in(self, matrix: Any, fixed, n: int, name: str):
        """Exact solves of ``n`` rows of interactions against the ``fixed`` factors."""
        return self._fold_in_checked(
            data.check_rows_for(matrix, n, fixed.shape[0], fixed.dtype, name=name,
                                columns="user" if name == "item_users" else "item"), fixed,
            given=(matrix, name))

    def _fold_in_checked(self, R, fixed, given: tuple[Any, str] | None = None):
        """:meth:`_fold_in` of rows that ``data.check_rows_for`` has checked, from the
        matrix ``given`` (and its name), whose repeated ratings (explicit feedback) were
        summed by the check: warned of."""
        p = self._check_params()
        if given is not None and p["feedback"] == "explicit" and hasattr(given[0], "nnz"):
            data.warn_summed_ratings(
                int(given[0].nnz), R, ("item", "user") if given[1] == "item_users" else
                ("user", "item"), rows=f"stored entries of {given[1]}")
        backend = self._backend
        n = R.shape[0]
        check_definite(p, fixed.shape[0], "fixed-side rows", fixed.shape[1])
        rows = backend.put(data.weighted_rows(
            R, feedback=p["feedback"], alpha=p["alpha"], confidence=p["confidence"],
            epsilon=p["epsilon"],
        ))
        out = backend.asarray(np.zeros((n, fixed.shape[1])), fixed.dtype)
        gram = self._derived(fixed, "gram", lambda: backend.gram(fixed)) \
            if p["feedback"] == "implicit" else None
        solver = "nnls" if p["solver"] == "nnls" else "cholesky"  # exact, as the fit's
        check_definite_base(p, gram, fixed.shape[0], backend, solver=solver)
        backend.solve_rows(rows, fixed, gram, regularization=p["regularization"],
                           feedback=p["feedback"], out=out, solver=solver,
                           scale_regularization=p["scale_regularization"])
        if not backend.all_finite(out):  # a GPU's Cholesky says so by NaN, not by raising
            raise self._unsolvable(p, fixed, gram)
        return out

    def _unsolvable(self, p: dict[str, Any], fixed, gram) -> ValueError:
        """Why a fold-in against the ``fixed`` factors (``gram``: their Gram matrix, or
        None) solved to NaN or infinite values: the factors' products overflow their
        dtype, or the systems are not numerically positive definite in it."""
        backend, dtype = self._backend, np.dtype(fixed.dtype)
        largest = float(backend.xp.abs(fixed).max())
        if not backend.all_finite(backend.gram(fixed) if gram is None else gram):
            wider = " or use dtype=float64" if dtype == np.float32 else ""
            return ValueError(f"the fixed factors (up to {largest:.3g} in magnitude) are "
                              f"too large: their products overflow {dtype.name}; scale them "
                              f"down{wider}")
        return ValueError(  # (a singular F^T F without regularization: refused before)
            f"regularization={p['regularization']}: the rows' systems are not numerically "
            f"positive definite in {dtype.name} (the fixed factors are up to "
            f"{largest:.3g} in magnitude); use a larger regularization, or scale the "
            f"factors or the values down")

    def recommend(
        self,
        userid: Any,
        user_items: Any = None,
        N: int = 10,
        filter_already_liked_items: bool = True,
        filter_items: Any = None,
        recalculate_user: bool = False,
        items: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The top ``N`` items for one user or a batch of users.

        Parameters
        ----------
        userid : int or array-like of int, shape (n_users_given,)
            User rows of the fitted matrix (any id when ``recalculate_user`` is true).
        user_items : scipy.sparse matrix, shape (n_users_given, n_items), optional
            The users' interactions, one row per id; needed to filter liked items and to
            recalculate users.
        N : int, default 10
            How many items per user (at most the number of candidate items).
        filter_already_liked_items : bool, default True
            Never recommend an item stored in the user's row of ``user_items``.
        filter_items : array-like of int, optional
            Items never to recommend.
        recalculate_user : bool, default False
            Compute the user factors from ``user_items`` (fold-in) instead of using the
            fitted ones.
        items : array-like of int, optional
            Recommend only among these items (not together with ``filter_items``).

        Returns
        -------
        ids : numpy.ndarray of int64, shape (N,) or (n_users_given, N)
        scores : numpy.ndarray, shape (N,) or (n_users_given, N)
            Dot products ``x_u . y_i``, best first. A 1-D result is shortened, and a 2-D
            result padded with id ``-1`` and score ``-inf``, when filtering leaves a user
            fewer than ``N`` items.
        """
        self._check_fitted()
        filter_already_liked_items = data.check_bool("filter_already_liked_items",
                                                     filter_already_liked_items)
        recalculate_user = data.check_bool("recalculate_user", recalculate_user)
        backend = self._backend
        n_users, n_items = self.user_factors_.shape[0], self.item_factors_.shape[0]
        ids, scalar = _as_ids(userid, "userid")
        if not recalculate_user:
            _check_range(ids, n_users, "userid", "users", self._own_ids("user"))
        candidates, blocked, n_eligible = _eligible(filter_items, items, n_items,
                                                    model_ids=self._own_ids("item"))
        N = min(data.check_int("N", N, minimum=1), n_eligible)
        exclude = None
        if filter_already_liked_items or recalculate_user:
            if user_items is None:
                raise ValueError(
                    "user_items is required with filter_already_liked_items=True or "
                    "recalculate_user=True: pass the users' rows of the interaction matrix"
                )
            # values fold in (in the model's dtype) or only filter (any finite value)
            dtype = self.item_factors_.dtype if recalculate_user else \
                data.kept_dtype(user_items)
            exclude = data.check_rows_for(user_items, len(ids), n_items, dtype,
                                          name="user_items")
        if recalculate_user:
            queries = self._fold_in_checked(exclude, self.item_factors_,
                                            given=(user_items, "user_items"))
        else:
            queries = self.user_factors_[backend.asarray(ids)]
        if not filter_already_liked_items:
            exclude = None
        top, scores = backend.topk(queries, self.item_factors_, N, exclude=exclude,
                                   candidates=candidates, blocked=blocked)
        return query_result(top, scores, scalar)

    def recommend_frame(self, users: Any = None, interactions: Any = None, N: int = 10, *,
                        filter_already_liked_items: bool = True, items: Any = None,
                        filter_items: Any = None, user_col: str = "user",
                        item_col: str = "item", value_col: str | None = "value"):
        """The top ``N`` items of each user, by original ids, as a pandas DataFrame (as
        ``gpu-als recommend`` writes them), or a polars one for polars ``interactions`` or
        where only polars is installed.

        Users and items are the model's ids (:attr:`user_ids_`, :attr:`item_ids_`; factor
        rows for a model fitted without ids). Users the model lacks are folded in from
        their ``interactions`` (an exact solve against the item factors, as
        ``recommend(..., recalculate_user=True)``; the model is not changed); those without
        interactions with its items are skipped, with a warning that counts them.

        Parameters
        ----------
        users : id or array-like of ids, optional
            The users, each once, in this order. Default: every user of ``interactions``
            (in the order of their ids), or without it every user of the model.
        interactions : pandas or polars DataFrame, optional
            The users' (user, item, value) rows, as ``fit`` takes them: their items are
            not recommended (``filter_already_liked_items``), and they fold in new users.
            Rows naming items the model lacks are left out, with a warning that counts
            them.
        N : int, default 10
            Items per user (fewer where filtering leaves fewer).
        filter_already_liked_items : bool, default True
            Leave out each user's items in ``interactions``.
        items, filter_items : array-like of ids, optional
            Recommend only among ``items`` (an allowlist: what is in stock, say), and never
            ``filter_items`` (a blocklist); both may be given. Ids the model lacks are
            ignored, but ``items`` must name at least one it has.
        user_col, item_col, value_col : str
            The columns of ``interactions`` (``value_col`` as in
            :func:`gpu_als.data.from_dataframe`: missing or None counts each row as 1).

        Returns
        -------
        pandas.DataFrame (or polars.DataFrame)
            Columns ``user``, ``item``, ``rank`` (1 = best) and ``score`` (``x_u . y_i``),
            a row per recommendation, each user's best first.

        Raises
        ------
        ValueError
            When no user given is in the model or has interactions to fold in from.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"user": ["ann", "ann", "bob", "bob", "cy"],
        ...                    "item": ["x", "y", "y", "z", "x"]})
        >>> model = ALS(factors=2, iterations=5, backend="cpu", show_progress=False,
        ...             random_state=0).fit(df)
        >>> new = pd.DataFrame({"user": ["dan"], "item": ["x"]})  # a user the model lacks
        >>> model.recommend_frame(interactions=new, N=2)[["user", "item", "rank"]]
          user item  rank
        0  dan    y     1
        1  dan    z     2
        """
        self._check_fitted()
        frames = _frame_module("recommend_frame", "recommend", like=interactions)
        found = _id_queries.recommend_by_id(
            self._snapshot(), users, interactions, N,
            filter_already_liked_items=filter_already_liked_items, items=items,
            filter_items=filter_items, user_col=user_col, item_col=item_col,
            value_col=value_col, show_progress=None if self.show_progress else False)
        _warn_unanswered(found)
        return _frame(frames, found.table, {"user": self.user_ids_, "item": self.item_ids_})

    def recommend_users_frame(self, items: Any = None, interactions: Any = None, N: int = 10,
                              *, filter_already_liked_users: bool = True, users: Any = None,
                              filter_users: Any = None, user_col: str = "user",
                              item_col: str = "item", value_col: str | None = "value"):
        """The top ``N`` users of each item (the users to show it to), by original ids, as
        a pandas DataFrame, or a polars one as :meth:`recommend_frame` gives: Spark's
        ``recommendForAllItems`` and ``recommendForItemSubset``.

        It is :meth:`recommend_frame` with users and items swapped: the scores are the
        same ``x_u . y_i``, ranked over the users for each item. Items the model lacks are
        folded in from their ``interactions`` (an exact solve against the user factors, as
        ``recalculate_item``; the model is not changed); those without interactions with
        its users are skipped, with a warning that counts them.

        Parameters
        ----------
        items : id or array-like of ids, optional
            The items, each once, in this order. Default: every item of ``interactions``
            (in the order of their ids), or without it every item of the model.
        interactions : pandas or polars DataFrame, optional
            (user, item, value) rows, as ``fit`` takes them: the users of an item there are
            not recommended for it (``filter_already_liked_users``), and they fold in new
            items. Rows naming users the model lacks are left out, with a warning that
            counts them.
        N : int, default 10
            Users per item (fewer where filtering leaves fewer).
        filter_already_liked_users : bool, default True
            Leave out each item's users in ``interactions``.
        users, filter_users : array-like of ids, optional
            Rank only ``users`` (an allowlist: those who may be contacted, say), and never
            ``filter_users`` (a blocklist); both may be given. Ids the model lacks are
            ignored, but ``users`` must name at least one it has.
        user_col, item_col, value_col : str
            The columns of ``interactions``, as in :meth:`recommend_frame`.

        Returns
        -------
        pandas.DataFrame (or polars.DataFrame)
            Columns ``item``, ``user``, ``rank`` (1 = best) and ``score``, a row per
            recommendation, each item's best first.

        Raises
        ------
        ValueError
            When no item given is in the model or has interactions to fold in from.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"user": ["ann", "ann", "bob", "bob", "cy"],
        ...                    "item": ["x", "y", "y", "z", "x"]})
        >>> model = ALS(factors=2, iterations=5, backend="cpu", show_progress=False,
        ...             random_state=0).fit(df)
        >>> top = model.recommend_users_frame(["z"], interactions=df, N=2)
        >>> list(top.columns), list(top["user"])  # bob has z already
        (['item', 'user', 'rank', 'score'], ['ann', 'cy'])
        """
        self._check_fitted()
        frames = _frame_module("recommend_users_frame", "predict", like=interactions)
        found = _id_queries.recommend_by_id(
            self._transposed(), items, interactions, N,
            filter_already_liked_items=filter_already_liked_users, items=users,
            filter_items=filter_users, user_col=item_col, item_col=user_col,
            value_col=value_col, show_progress=None if self.show_progress else False,
            sides=("item", "user"))
        _warn_unanswered(found, "item", "user")
        return _frame(frames, found.table, {"item": self.item_ids_, "user": self.user_ids_})

    def _snapshot(self) -> ALS:
        """This fitted model as it is now, for one query by id: it shares the factors, the
        ids and the values derived from them (nothing is copied), but a partial fit on
        another thread meanwhile, which grows the model, does not grow it. The query reads
        the factors and ids at several moments, and found them of different sizes when
        an item was added between two reads (a ValueError of a matrix's width).

        Taken under the partial fits' lock, with the lookups of the ids as they are for
        these ids (:class:`gpu_als._ids.FrozenIds`). The values derived from the factors
        stay shared: the model puts a new dict of them in place whenever its factors
        change, so that what the snapshot adds later goes to the old one."""
        self._check_fitted()
        with self.__dict__.setdefault("_update_lock", threading.RLock()):
            view = object.__new__(type(self))  # not copy.copy: __setstate__ copies factors
            state = view.__dict__
            state.update(self.__dict__)
            state["_id_indexes"] = {side: _ids.FrozenIds(self._id_index(side), ids)
                                    for side in ("user", "item")
                                    if (ids := self._own_ids(side)) is not None}
            state["_spare_rows"] = {}
        return view

    def _transposed(self) -> ALS:
        """A :meth:`_snapshot` of this model with users and items swapped: the model of
        the items x users matrix, whose recommendations rank users for items. (The
        objective is the same on either side, so folding in an item there is
        ``recalculate_item`` here.)"""
        swapped = self._snapshot()
        state = swapped.__dict__
        state["user_factors_"], state["item_factors_"] = \
            state["item_factors_"], state["user_factors_"]
        state["user_ids_"], state["item_ids_"] = state["item_ids_"], state["user_ids_"]
        state["_factor_ids"] = (id(state["user_factors_"]), id(state["item_factors_"]))
        indexes = state["_id_indexes"]
        state["_id_indexes"] = {side: indexes[other] for side, other
                                in (("user", "item"), ("item", "user")) if other in indexes}
        return swapped

    def similar_items(self, itemid: Any, N: int = 10, recalculate_item: bool = False,
                      item_users: Any = None, filter_items: Any = None,
                      items: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` items most similar to each given item, by cosine of their factors.

        An item is its own best match (score 1) unless filtered out.

        Parameters
        ----------
        itemid : int or array-like of int
            Item rows of the model (any ids when ``recalculate_item`` is true).
        N : int, default 10
        recalculate_item : bool, default False
            Compute the query items' factors from ``item_users`` (fold-in, as
            :meth:`recalculate_item`) instead of using the fitted ones: items the model
            has not seen can be queried.
        item_users : scipy.sparse matrix, shape (n_items_given, n_users), optional
            The query items' interactions, one row per id (with ``recalculate_item``).
        filter_items : array-like of int, optional
            Items never to return.
        items : array-like of int, optional
            Return only among these items.

        Returns
        -------
        ids : numpy.ndarray of int64, shape (N,) or (n_items_given, N)
        scores : numpy.ndarray, shape (N,) or (n_items_given, N)
            Cosine similarities, best first.
        """
        self._check_fitted()
        queries = None
        if data.check_bool("recalculate_item", recalculate_item):
            if item_users is None:
                raise ValueError("item_users is required with recalculate_item=True: pass "
                                 "the items' rows of the users x items matrix, transposed")
            ids, _ = _as_ids(itemid, "itemid")
            queries = self._fold_in(item_users, self.user_factors_, len(ids), "item_users")
        return self._similar(self.item_factors_, itemid, N, filter_items, items, "item",
                             queries)

    def similar_users(self, userid: Any, N: int = 10, filter_users: Any = None,
                      users: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``N`` users most similar to each given user, by cosine of their factors.

        Same as :meth:`similar_items`, for users.
        """
        self._check_fitted()
        return self._similar(self.user_factors_, userid, N, filter_users, users, "user")

    def similar_items_frame(self, items: Any = None, N: int = 10, interactions: Any = None,
                            *, user_col: str = "user", item_col: str = "item",
                            value_col: str | None = "value"):
        """The ``N`` items most similar to each given item, by original ids, as a pandas
        DataFrame (as ``gpu-als similar`` writes them; a polars one for polars
        ``interactions`` or where only polars is installed).

        Items the model lacks are folded in from their ``interactions`` (an exact solve
        against the user factors, as ``similar_items(..., recalculate_item=True)``; the
        model is not changed): the items most like a new one, from its first users.

        Parameters
        ----------
        items : id or array-like of ids, optional
            The model's item ids (:attr:`item_ids_`; factor rows for a model fitted without
            ids), each once, in this order, or new items of ``interactions``. Default:
            every item of ``interactions``, or without it every item of the model.
        N : int, default 10
            Similar items per item (at most the number of other items).
        interactions : pandas or polars DataFrame, optional
            (user, item, value) rows, as ``fit`` takes them, that fold in the items the
            model lacks (the known ones keep their factors). Rows naming users the model
            lacks are left out, with a warning that counts them.
        user_col, item_col, value_col : str
            The columns of ``interactions``, as in :meth:`recommend_frame`.

        Returns
        -------
        pandas.DataFrame (or polars.DataFrame)
            Columns ``item``, ``similar_item``, ``rank`` (1 = most similar) and ``score``
            (cosine of the factors), a row per pair; an item is never its own match.

        Raises
        ------
        ValueError
            For an id the model does not have and ``interactions`` cannot fold in.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"user": ["ann", "ann", "bob", "bob", "cy"],
        ...                    "item": ["x", "y", "y", "z", "x"]})
        >>> model = ALS(factors=2, iterations=5, backend="cpu", show_progress=False,
        ...             random_state=0).fit(df)
        >>> model.similar_items_frame("x", N=2)[["item", "similar_item", "rank"]]
          item similar_item  rank
        0    x            y     1
        1    x            z     2
        """
        return self._similar_frame("item", items, N, interactions, user_col, item_col,
                                   value_col)

    def similar_users_frame(self, users: Any = None, N: int = 10, interactions: Any = None,
                            *, user_col: str = "user", item_col: str = "item",
                            value_col: str | None = "value"):
        """The ``N`` users most similar to each given user, by original ids, as a pandas
        DataFrame: columns ``user``, ``similar_user``, ``rank``, ``score``. The user-side
        twin of :meth:`similar_items_frame` (users the model lacks folded in from their
        ``interactions`` against the item factors)."""
        return self._similar_frame("user", users, N, interactions, user_col, item_col,
                                   value_col)

    def _similar_frame(self, kind: str, query: Any, N: int, interactions: Any,
                       user_col: str, item_col: str, value_col: str | None):
        self._check_fitted()
        frames = _frame_module(f"similar_{kind}s_frame", f"similar_{kind}s",
                               like=interactions)
        found = _id_queries.similar_by_id(
            self._snapshot(), kind, query, N, interactions=interactions, user_col=user_col,
            item_col=item_col, value_col=value_col,
            show_progress=None if self.show_progress else False)
        if found.n_unknown_rows:
            other = "user" if kind == "item" else "item"
            warnings.warn(f"rows of interactions that name {other}s the model lacks: "
                          f"{found.n_unknown_rows} left out", stacklevel=data.user_stacklevel())
        ids = getattr(self, f"{kind}_ids_")
        return _frame(frames, found.table, {kind: ids, f"similar_{kind}": ids})

    def item_factors_frame(self, items: Any = None):
        """The item factors by original id, as a pandas DataFrame (a polars one where only
        polars is installed), as Spark MLlib's ``itemFactors``: for a warehouse table, a
        feature store or a vector index. ``gpu-als export`` writes it to a file.

        Parameters
        ----------
        items : id or array-like of ids, optional
            The model's item ids (:attr:`item_ids_`; factor rows for a model fitted without
            ids), each once, in this order. Default: every item, in the model's order.

        Returns
        -------
        pandas.DataFrame (or polars.DataFrame)
            Columns ``item`` (the ids as the model has them) and ``factors``: each item's
            factors, a NumPy array in the model's dtype (in polars, an ``Array`` column).
            They are copied from the model (to the host, for a GPU model): changing them
            leaves the model as it was. ``np.stack(frame["factors"])`` is the matrix, and
            ``to_parquet`` writes the column as a list.

        Raises
        ------
        ValueError
            For an id the model does not have.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"user": ["ann", "ann", "bob"], "item": ["x", "y", "y"]})
        >>> model = ALS(factors=2, iterations=2, backend="cpu", show_progress=False).fit(df)
        >>> frame = model.item_factors_frame(["y"])
        >>> list(frame.columns), frame["factors"][0].shape
        (['item', 'factors'], (2,))
        """
        return self._factors_frame("item", items)

    def user_factors_frame(self, users: Any = None):
        """The user factors by original id, as a pandas DataFrame: columns ``user`` and
        ``factors`` (Spark's ``userFactors``). The user-side twin of
        :meth:`item_factors_frame`."""
        return self._factors_frame("user", users)

    def _factors_frame(self, kind: str, query: Any):
        self._check_fitted()
        frames = _frame_module(f"{kind}_factors_frame", f"{kind}_factors_")
        ids, factors = _id_queries.factors_by_id(self._snapshot(), kind, query)
        column = factors if frames.__name__ == "polars" else list(factors)
        return _frame(frames, {kind: ids, "factors": column}, {kind: self._own_ids(kind)})

    def _similar(self, factors, query_id, N, filter_ids, only_ids, kind, queries=None):
        """Cosine top-N against ``factors`` (of ``kind`` "user" or "item") for the rows
        ``query_id`` of it, or for the given ``queries`` factors (one per id)."""
        backend = self._backend
        n = factors.shape[0]
        model_ids = self._own_ids(kind)
        ids, scalar = _as_ids(query_id, f"{kind}id")
        if queries is None:
            _check_range(ids, n, f"{kind}id", f"{kind}s", model_ids)
            queries = factors[backend.asarray(ids)]
        candidates, blocked, n_eligible = _eligible(filter_ids, only_ids, n, f"{kind}s",
                                                    model_ids)
        N = min(data.check_int("N", N, minimum=1), n_eligible)

        def inverse_norms(F):  # a zero vector stays zero
            xp = backend.xp
            return 1 / xp.maximum(xp.sqrt(xp.einsum("ij,ij->i", F, F)), F.dtype.type(1e-12))

        # cosines as dot products scaled by the targets' inverse norms: no normalized copy
        # of every factor (which took 90 % of a single query's time), norms kept
        scale = self._derived(factors, "inverse norms", lambda: inverse_norms(factors))
        top, scores = backend.topk(
            queries * inverse_norms(queries)[:, None], factors, N, candidates=candidates,
            blocked=blocked, target_scale=scale)
        # a vector's cosine with itself rounds to 1 + 1e-7 in float32: a cosine is <= 1
        np.minimum(scores, 1, out=scores)
        return query_result(top, scores, scalar)

    def explain(self, userid: Any, user_items: Any, itemid: Any, user_weights: Any = None,
                N: int = 10) -> tuple[float, list[tuple[int, float]], np.ndarray]:
        """Why the model scores ``itemid`` for a user: the score split over the user's items.

        The user's factors solve ``A_u x_u = sum_j t_j y_j`` (the system of ``fit`` and
        :meth:`recalculate_user`), so with ``W = A_u^-1`` the score is
        ``y_i . x_u = sum_j t_j (y_i^T W y_j)``: item ``j`` contributes
        ``t_j y_i^T W y_j``, where ``t_j`` is the confidence ``c_uj`` of a liked item
        (implicit feedback) or the rating (explicit). Hu, Koren & Volinsky (2008), section
        5. The implicit library's ``explain``, with the same arguments and results.

        With ``solver="nnls"`` the user's factors are the nonnegative solution, whose free
        factors ``F`` (those above 0) solve ``A_FF x_F = b_F`` and the others are 0: the
        same split with ``W = A_FF^-1`` on the free factors, so the contributions still sum
        to the score.

        Parameters
        ----------
        userid : int
            The user's row when ``user_items`` holds every user (ignored when it has one
            row).
        user_items : scipy.sparse matrix, shape (1, n_items) or (n_users, n_items)
            The user's interactions: the user's row, or the whole matrix.
        itemid : int
            The item whose score is explained.
        user_weights : numpy.ndarray, shape (factors, factors), optional
            The ``user_weights`` of an earlier call for the same user and interactions:
            skips building and factorizing ``A_u`` (faster for many items).
        N : int, default 10
            How many contributions to return.

        Returns
        -------
        score : float
            ``y_i . x_u`` with ``x_u`` solved from ``user_items`` (for the training row,
            the fitted score; with ``solver="cg"`` or ``"pcg"``, the exact solution that CG
            approximates).
        contributions : list of (int, float)
            The ``N`` largest ``(itemid, contribution)`` pairs, largest first; over all the
            user's items the contributions sum to ``score``.
        user_weights : numpy.ndarray, shape (factors, factors), float64
            The lower Cholesky factor of ``A_u`` (with ``solver="nnls"``: of ``A_FF``, in
            the rows and columns of the free factors; those of the factors held at 0 are 0).
        """
        self._check_fitted()
        p = self._check_params()
        backend = self._backend
        n_users, n_items = self.user_factors_.shape[0], self.item_factors_.shape[0]
        k = self.item_factors_.shape[1]
        N = data.check_int("N", N, minimum=1)
        item = _as_id(itemid, "itemid")
        _check_range(np.array([item]), n_items, "itemid", "items", self._own_ids("item"))
        csr = data.check_user_items_allow_empty(data.as_row_matrix(user_items),
                                                self.item_factors_.dtype, name="user_items")
        if csr.shape[1] != n_items or csr.shape[0] not in (1, n_users):
            raise ValueError(f"user_items has shape {csr.shape}, expected (1, {n_items}) or "
                             f"({n_users}, {n_items}): the user's row or every user's")
        if csr.shape[0] > 1:
            user = _as_id(userid, "userid")
            _check_range(np.array([user]), n_users, "userid", "users", self._own_ids("user"))
            csr = csr[user]
        rows = data.weighted_rows(csr, feedback=p["feedback"], alpha=p["alpha"],
                                  confidence=p["confidence"], epsilon=p["epsilon"])
        Y = self.item_factors_
        Yu = backend.to_numpy(Y[backend.asarray(rows.indices)]).astype(np.float64)
        if user_weights is None:
            user_weights = self._explain_weights(p, Y, rows, Yu)
        else:
            user_weights = np.asarray(user_weights, dtype=np.float64)
            if user_weights.shape != (k, k) or not np.isfinite(user_weights).all():
                shown = f"has shape {user_weights.shape}, expected ({k}, {k})" \
                    if user_weights.shape != (k, k) else "holds NaN or infinite values"
                raise ValueError(f"user_weights {shown}: pass what explain returned for "
                                 f"this user")
        # the free factors: all of them, but for the ones solver="nnls" holds at 0, whose
        # rows and columns of user_weights are 0 (a Cholesky factor's diagonal is not)
        free = np.diag(user_weights) != 0
        held = ~free
        if (p["solver"] != "nnls" and held.any()) or \
                user_weights[held].any() or user_weights[:, held].any():
            raise ValueError("user_weights is not a Cholesky factor that explain returns: "
                             "pass what explain returned for this user")
        y_i = backend.to_numpy(Y[item]).astype(np.float64)
        weighted_item = np.zeros(k)  # W y_i
        if free.any():
            weighted_item[free] = scipy.linalg.cho_solve(
                (user_weights[np.ix_(free, free)], True), y_i[free])
        contributions = rows.target.astype(np.float64) * (Yu @ weighted_item)
        liked = np.flatnonzero(rows.target != 0)  # a dislike (implicit) contributes nothing
        order = liked[np.lexsort((rows.indices[liked], -contributions[liked]))][:N]
        top = [(int(rows.indices[j]), float(contributions[j])) for j in order]
        return float(contributions.sum()), top, user_weights

    def _explain_weights(self, p: dict[str, Any], Y, rows: data.WeightedRows,
                         Yu: np.ndarray) -> np.ndarray:
        """:meth:`explain`'s ``user_weights``: the lower Cholesky factor of the user's
        ``A_u`` (float64, on the host), or with ``solver="nnls"`` of ``A_FF`` on the free
        factors of the user's nonnegative solution, 0 in the rows and columns of the
        others."""
        backend = self._backend
        k = Y.shape[1]
        gram = None
        if p["feedback"] == "implicit":
            gram = backend.to_numpy(self._derived(Y, "gram", lambda: backend.gram(Y)))
            # (the scaled penalty counts positive entries, as Spark does)
            scale = int((rows.target > 0).sum()) if p["scale_regularization"] else 1
            A = gram + p["regularization"] * scale * np.eye(k)
        else:
            A = p["regularization"] * len(rows.indices) * np.eye(k)
        A += (Yu * rows.weight[:, None]).T @ Yu
        if not np.isfinite(A).all():  # (SciPy's "array must not contain infs" below)
            raise self._unsolvable(p, Y, None)
        free = np.ones(k, dtype=bool)
        weights = np.zeros((k, k))
        try:
            if p["solver"] == "nnls" and len(rows.indices):
                # the nonnegative solution's free factors; A_FF x_F = b_F holds on them
                b = rows.target.astype(np.float64) @ Yu
                x = nnls_rows(A[None], b[None], xp=np, solve=solve_batch,
                              to_numpy=np.asarray, asarray=np.asarray)[0]
                if not np.isfinite(x).all():
                    raise np.linalg.LinAlgError
                free = x > 0
            weights[np.ix_(free, free)] = np.linalg.cholesky(A[np.ix_(free, free)])
        except np.linalg.LinAlgError:
            if gram is not None:  # Y^T Y + lambda I singular: named as fold-ins name it
                regularized_gram(gram, p["regularization"], Y.shape[0])
            if not len(rows.indices):  # (explicit: A_u = 0)
                raise ValueError("user_items holds no rating of the user: its factors are 0 "
                                 "(explicit feedback), and no score is there to explain"
                                 ) from None
            raise ValueError("the user's system is numerically singular: nothing to "
                             "explain") from None
        return weights

    def explain_frame(self, user: Any, interactions: Any, items: Any, N: int = 10, *,
                      user_col: str = "user", item_col: str = "item",
                      value_col: str | None = "value"):
        """Why the model scores ``items`` for ``user``, by original ids, as a pandas
        DataFrame (as ``gpu-als explain`` writes it), or a polars one for polars
        ``interactions``: :meth:`explain` of each item, from the user's rows of
        ``interactions``.

        Parameters
        ----------
        user : id
            The user, as the user column of ``interactions`` names it; it need not be in
            the model (its factors are solved from these rows, as a fold-in's are).
        interactions : pandas or polars DataFrame
            (user, item, value) rows, as ``fit`` takes them: the user's, or anyone's. Rows
            naming items the model lacks are left out.
        items : id or array-like of ids
            The items whose scores are explained, each once, in this order: the model's
            ids (an id it lacks is refused).
        N : int, default 10
            Contributions per item: the largest.
        user_col, item_col, value_col : str
            The columns of ``interactions``, as in :meth:`recommend_frame`.

        Returns
        -------
        pandas.DataFrame (or polars.DataFrame)
            Columns ``user``, ``item``, ``score`` (the item's score, ``y_i . x_u`` with
            ``x_u`` solved exactly from the rows), ``because_item`` (an item of the user's)
            and ``contribution`` (its share of the score: over all the user's items they
            sum to it), up to ``N`` rows per item, largest contribution first.

        Raises
        ------
        ValueError
            For an item the model lacks, or a user without rows of items it has.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"user": ["ann", "ann", "bob", "bob", "cy"],
        ...                    "item": ["x", "y", "y", "z", "x"]})
        >>> model = ALS(factors=2, iterations=5, backend="cpu", show_progress=False,
        ...             random_state=0).fit(df)
        >>> why = model.explain_frame("ann", df, ["z"], N=2)
        >>> list(why.columns), list(why["because_item"])
        (['user', 'item', 'score', 'because_item', 'contribution'], ['y', 'x'])
        >>> bool(abs(why["contribution"].sum() - why["score"].iloc[0]) < 1e-6)
        True
        """
        self._check_fitted()
        frames = _frame_module("explain_frame", "explain", like=interactions)
        table, _, _ = _id_queries.explain_by_id(self._snapshot(), user, interactions, items,
                                                N, user_col=user_col, item_col=item_col,
                                                value_col=value_col)
        return frames.DataFrame(table)

    def predict(self, userids: Any, itemids: Any) -> np.ndarray:
        """Predicted values ``x_u . y_i`` for pairs of users and items, by factor row
        (:meth:`predict_frame` takes a DataFrame of pairs named by id).

        Parameters
        ----------
        userids, itemids : array-like of int, same shape

        Returns
        -------
        numpy.ndarray, same shape as the ids
            Ratings (explicit feedback) or preference scores (implicit).
        """
        self._check_fitted()
        users = np.asarray(userids)
        items = np.asarray(itemids)
        if users.shape != items.shape:
            raise ValueError(
                f"userids has shape {users.shape} but itemids has shape {items.shape}"
            )
        u, _ = _as_ids(users.ravel(), "userids")
        i, _ = _as_ids(items.ravel(), "itemids")
        _check_range(u, self.user_factors_.shape[0], "userids", "users", self._own_ids("user"))
        _check_range(i, self.item_factors_.shape[0], "itemids", "items", self._own_ids("item"))
        backend = self._backend
        X, Y = self.user_factors_, self.item_factors_
        out = backend.xp.empty(len(u), X.dtype)
        step = max(1, PREDICT_BLOCK_ELEMENTS // X.shape[1])
        for start in range(0, len(u), step):
            block = slice(start, start + step)
            out[block] = (X[backend.asarray(u[block])] * Y[backend.asarray(i[block])]).sum(axis=1)
        return backend.to_numpy(out).reshape(users.shape)

    def predict_frame(self, pairs: Any, *, user_col: str = "user", item_col: str = "item",
                      score_col: str = "score"):
        """:meth:`predict` for (user, item) pairs named by id: ``pairs`` with a column of
        predicted values added (as Spark MLlib's ``ALSModel.transform``), a pandas
        DataFrame, or a polars one for polars ``pairs``.

        Users and items are the model's ids (:attr:`user_ids_`, :attr:`item_ids_`; factor
        rows for a model fitted without ids), matched as :meth:`user_rows` matches them. A
        pair whose user or item the model lacks gets a NaN score, with a warning that
        counts them (Spark's ``coldStartStrategy="nan"``; ``.dropna(subset=["score"])``
        drops them, as its ``"drop"``).

        Parameters
        ----------
        pairs : pandas or polars DataFrame (or a table ``fit`` reads)
            One row per pair; other columns are kept. A rating column makes
            ``rmse``-style checks a column difference away.
        user_col, item_col : str
            The columns of the ids.
        score_col : str, default "score"
            The name of the added column; refused if ``pairs`` already has one.

        Returns
        -------
        pandas.DataFrame (or polars.DataFrame)
            ``pairs``' rows in order, with ``score_col``: ``x_u . y_i`` in the factors'
            dtype (a rating for explicit feedback, a preference score for implicit), NaN for
            a pair the model cannot score.

        Examples
        --------
        >>> import pandas as pd
        >>> df = pd.DataFrame({"user": ["ann", "ann", "bob", "bob"],
        ...                    "item": ["x", "y", "y", "z"], "value": [5.0, 3.0, 4.0, 1.0]})
        >>> model = ALS(factors=2, iterations=10, feedback="explicit", backend="cpu",
        ...             show_progress=False, random_state=0).fit(df)
        >>> scored = model.predict_frame(df)
        >>> list(scored.columns), bool((scored["score"] - scored["value"]).abs().max() < 1)
        (['user', 'item', 'value', 'score'], True)
        """
        self._check_fitted()
        frames = _frame_module("predict_frame", "predict", like=pairs)
        df = data._eager_frame(data._check_frame(pairs, "pairs"), "pairs")
        if not isinstance(score_col, str):
            raise TypeError(f"score_col must be a str, got {type(score_col).__name__}")
        if score_col in df.columns:
            raise ValueError(f"pairs already has a column {score_col!r}: name the scores' "
                             f"column with score_col=")
        found = _id_queries.predict_by_id(self._snapshot(), df, user_col, item_col)
        if found.n_unknown:
            name = "names a user or item" if found.n_unknown == 1 else "name users or items"
            warnings.warn(f"{found.n_unknown:,} of the {len(found.scores):,} pairs {name} the "
                          f"model lacks ({found.lacking()}): their {score_col} is NaN",
                          stacklevel=data.user_stacklevel())
        if frames.__name__ == "polars":
            return df.with_columns(frames.Series(score_col, found.scores))
        return df.assign(**{score_col: found.scores})

    # ---- conversion and persistence ----------------------------------------------------

    def to_cpu(self) -> ALS:
        """A copy of this model whose factors are NumPy arrays and whose backend is the CPU."""
        return self._on_backend("cpu")

    def to_gpu(self) -> ALS:
        """A copy of this model whose factors are CuPy arrays on the current GPU.

        Raises
        ------
        BackendUnavailableError
            Where the GPU backend cannot run; the message says why.
        """
        return self._on_backend("gpu")

    def _on_backend(self, backend: str | Backend) -> ALS:
        """A copy with the same hyperparameters and fitted state, on another backend."""
        self._check_fitted()
        target = get_backend(backend)
        clone = type(self)(**{**self.get_params(), "backend": target.name})
        clone._set_fitted(
            target,
            self._backend.to_numpy(self.user_factors_),
            self._backend.to_numpy(self.item_factors_),
            self.loss_history_,
            self._own_ids("user"),
            self._own_ids("item"),
        )
        if hasattr(self, "_sklearn_output_config"):  # set_output's choice goes with it
            clone._sklearn_output_config = dict(self._sklearn_output_config)
        return clone

    def __getstate__(self) -> dict[str, Any]:
        """For pickle (joblib, multiprocessing): the factors as NumPy arrays, and a
        ``backend`` given as a Backend instance as its name; the device stays behind."""
        state = self.__dict__.copy()
        if isinstance(state.get("backend"), Backend):
            state["backend"] = state["backend"].name
        state.pop("_factor_ids", None)
        state.pop("_derived_values", None)
        state.pop("_spare_rows", None)
        state.pop("_id_indexes", None)
        state.pop("_fit_in_progress", None)  # a copy (a callback's checkpoint) is not fitting
        state.pop("_update_lock", None)  # a copy has locks of its own
        backend = state.pop("_backend", None)
        if backend is not None:
            state["user_factors_"] = backend.to_numpy(self.user_factors_)
            state["item_factors_"] = backend.to_numpy(self.item_factors_)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """The fitted factors go back to the backend they were on where it can run here,
        else to the CPU (a GPU model unpickled on a machine without one), with a warning."""
        self.__dict__.update(state)
        if "user_factors_" not in state or "backend_" not in state:
            return  # unfitted, or factors assigned by hand: the first query checks them
        backend = get_backend_or_cpu(state["backend_"],
                                     f"unpickling a {state['backend_']} model")
        self._set_fitted(backend, state["user_factors_"], state["item_factors_"],
                         state["loss_history_"], state.get("user_ids_"),
                         state.get("item_ids_"))

    def _set_fitted(self, backend: Backend, X, Y, loss_history, user_ids=None, item_ids=None):
        # asarray may return its input: copy so that the two models never share factors
        self.user_factors_ = backend.asarray(np.array(X, copy=True))
        self.item_factors_ = backend.asarray(np.array(Y, copy=True))
        self.loss_history_ = [float(v) for v in loss_history]
        self.backend_ = backend.name
        self._backend = backend
        self.user_ids_ = user_ids
        self.item_ids_ = item_ids
        self._remember_factors()

    def _own_ids(self, kind: str) -> np.ndarray | None:
        """The original ids of the ``kind`` ("user" or "item") factor rows, or None: a model
        given its factors by assignment (``model.user_factors = X``) has none."""
        return getattr(self, f"{kind}_ids_", None)

    def _remember_factors(self, changed: Any = None) -> None:
        """Mark the factors as checked and on the backend (see :meth:`_check_fitted`): the
        pair of arrays, by identity, since the model holds them. Called whenever the model
        changes its factors: drops the values derived from ``changed`` (the one array a
        partial fit changed; None: both) and from arrays it no longer holds."""
        self._factor_ids = (id(self.user_factors_), id(self.item_factors_))
        kept = set() if changed is None else set(self._factor_ids) - {id(changed)}
        self._derived_values: dict[tuple[int, str], Any] = {
            key: value for key, value in self.__dict__.get("_derived_values", {}).items()
            if key[0] in kept}
        # a growth buffer whose rows the model no longer holds would only take memory
        self._spare_rows: dict[str, tuple[Any, Any]] = {
            name: (held, buffer) for name, (held, buffer)
            in self.__dict__.get("_spare_rows", {}).items()
            if held is self.__dict__.get(name)}

    def _derived(self, factors, what: str, compute: Callable[[], Any]) -> Any:
        """``compute()``: a value derived from one of the model's factor arrays (its Gram
        matrix, its rows' inverse norms), kept until the model changes its factors (a fit,
        a partial fit, an assignment). An edit in place is not seen (see Attributes)."""
        cache = self.__dict__.setdefault("_derived_values", {})
        key = (id(factors), what)
        if key not in cache:
            value = compute()
            if isinstance(value, np.ndarray):
                value.flags.writeable = False  # shared by later calls: never edited
            cache[key] = value
        return cache[key]

    def save(self, path, *, user_ids=None, item_ids=None) -> str:
        """Write the model to one ``.npz`` file: factors, hyperparameters, format version.

        Nothing is pickled; a GPU model's file loads on a CPU-only machine and vice versa.
        ``callback`` is not saved, nor is a ``random_state`` that is not an integer. The
        ``factors`` and ``dtype`` saved are those of the fitted factors, should
        ``set_params`` have changed the estimator's since the fit.

        Parameters
        ----------
        path : str, path-like or file object
            Where to write (``.npz`` is added if missing, as NumPy does); a URL
            (``s3://bucket/model.npz``, any protocol of fsspec's whose package is
            installed), uploaded whole or not at all; or a binary file object (opened with
            ``"wb"``, an ``io.BytesIO``, a file of an fsspec filesystem), written from
            where it is.
        user_ids, item_ids : array-like, optional
            The original ids of the factor rows (e.g. from :func:`gpu_als.data.from_dataframe`),
            stored as numbers, booleans, strings, bytes or datetimes (others as their
            strings);
            default: those of the model, if it has any.

        Returns
        -------
        str
            The file written: ``path``, with ``.npz`` added if it was missing (a file
            object's ``name``).
        """
        self._check_fitted()
        params = self.get_params()
        params["backend"] = params["backend"] if isinstance(params["backend"], str) else "auto"
        # those of the factors, should set_params have changed them since the fit
        params["factors"] = int(self.user_factors_.shape[1])
        params["dtype"] = np.dtype(self.user_factors_.dtype).name
        params["callback"] = None
        if not isinstance(params["random_state"], (int, np.integer)):
            params["random_state"] = None
        # NumPy scalars (from a grid in an array, say) as the Python numbers JSON writes
        params = {name: value.item() if isinstance(value, np.generic) else value
                  for name, value in params.items()}
        X = self._backend.to_numpy(self.user_factors_)
        Y = self._backend.to_numpy(self.item_factors_)
        arrays: dict[str, Any] = {
            "format": np.array(FILE_FORMAT),
            "version": np.array(FILE_VERSION),
            "params": np.array(json.dumps(params)),
            "user_factors": X,
            "item_factors": Y,
            "loss_history": np.asarray(self.loss_history_, dtype=np.float64),
        }
        for name, ids, n in (("user_ids", user_ids, len(X)), ("item_ids", item_ids, len(Y))):
            if ids is None:
                ids = getattr(self, f"{name}_", None)
            else:  # as fit and from_factors check them
                ids = _ids.checked_ids(ids, n, name, distinct=True)
            if ids is not None:
                arrays[name] = _ids.storable_ids(np.asarray(ids))
        return _files.write_atomically(path, arrays)

    @classmethod
    def from_factors(cls, user_factors: Any, item_factors: Any, *, user_ids: Any = None,
                     item_ids: Any = None, **params: Any) -> ALS:
        """A fitted model made of given factors, e.g. trained elsewhere or edited.

        Every query (recommend, similar items, explain, evaluation) then answers from
        them; the hyperparameters matter for what solves again (fold-in with
        ``recalculate_user``, the ``partial_fit_*`` methods, a refit).

        Parameters
        ----------
        user_factors : array-like, shape (n_users, k)
        item_factors : array-like, shape (n_items, k)
            NumPy or CuPy arrays (or anything ``numpy.asarray`` takes) of finite real
            numbers; copied, onto the model's backend.
        user_ids, item_ids : array-like, optional
            Original ids of the rows (see :attr:`user_ids_`).
        **params
            Hyperparameters, as for :class:`ALS`; ``factors`` defaults to ``k``. The
            factors become ``dtype`` (default float32, whatever the arrays' dtype).

        Raises
        ------
        TypeError, ValueError
            For arrays that are not 2-D arrays of finite numbers with the same number of
            columns, values beyond ``dtype``'s range or rows whose norm is beyond its
            square root (1.8e19 in float32: their scores would overflow), ``factors``
            other than their columns, ids of another length, or bad hyperparameters.

        Examples
        --------
        >>> import numpy as np
        >>> from gpu_als import ALS
        >>> X, Y = np.eye(3, 2), np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
        >>> model = ALS.from_factors(X, Y, backend="cpu")
        >>> model.factors, model.item_factors_.dtype
        (2, dtype('float32'))
        >>> model.similar_items(0, N=3)[0]
        array([0, 2, 1])

        Assigning ``model.user_factors`` and ``model.item_factors`` (the implicit
        library's way) works too: the arrays are checked in the same way at the next query.
        """
        X, Y = _host_factors(user_factors, item_factors)
        k = X.shape[1]
        model = cls(**{"factors": k, **params})
        p = model._check_params()
        if p["factors"] != k:
            raise ValueError(f"factors={p['factors']}, but the factor arrays have {k} "
                             f"columns")
        X, Y = _in_dtype(X, Y, p["dtype"])
        model._set_fitted(get_backend(model.backend), X, Y, [],
                          _ids.checked_ids(user_ids, len(X), "user_ids", distinct=True),
                          _ids.checked_ids(item_ids, len(Y), "item_ids", distinct=True))
        return model

    @classmethod
    def load(cls, path, backend: str | Backend = "auto") -> ALS:
        """Read a model written by :meth:`save`, onto ``backend``. ``path`` as given to
        ``save`` (a path or a URL, without its ``.npz`` suffix too); or a binary file object
        (opened with ``"rb"``, an ``io.BytesIO``, a file of an fsspec filesystem), read from
        where it is.

        Raises
        ------
        ValueError
            For a file that is not a gpu-als model (one of the implicit library's says to
            use :func:`gpu_als.from_implicit`), is truncated or corrupted, has another
            format version, holds pickled objects, or whose arrays have the wrong shape,
            dtype or non-finite values.
        FileNotFoundError
            When there is no such file.
        """
        # (an implicit file's pickled random_state left out, to say which file it is)
        contents = _files.read_archive(path, "gpu-als model", skip_pickled=("random_state",))
        where = _files.file_name(path)  # what the errors call it
        missing = {"format", "version", "params", "user_factors", "item_factors",
                   "loss_history"} - set(contents)
        if "format" not in contents and {"user_factors", "item_factors", "regularization"
                                         } <= set(contents):
            given = "file" if _files.is_file_object(path) else repr(where)
            raise ImplicitModelFileError(f"{where} looks like a model saved by the implicit "
                                         f"library: gpu_als.from_implicit({given}) reads it")
        if missing or str(contents.get("format", "")) != FILE_FORMAT:
            raise ValueError(f"{where} is not a gpu-als model file (missing: "
                             f"{', '.join(sorted(missing)) or 'the format tag'})")
        version = contents["version"]
        if version.shape != () or version.dtype.kind not in "iu":
            raise ValueError(f"{where}: its format version is not an integer (an array of "
                             f"shape {version.shape} and dtype {version.dtype})")
        if int(version) != FILE_VERSION:
            newer = "; a newer gpu-als wrote it: upgrade to read it" \
                if int(version) > FILE_VERSION else ""
            raise ValueError(f"{where} has model format version {int(version)}; this gpu-als "
                             f"reads version {FILE_VERSION}{newer}")
        params = _stored_params(contents["params"], where)
        try:
            if "dtype" in params:  # as a type, as the default is
                params["dtype"] = data.check_dtype(params["dtype"]).type
            model = cls(**{**params, "backend": backend})
            p = model._check_params()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where} holds invalid hyperparameters: {exc}") from None
        X, Y = contents["user_factors"], contents["item_factors"]
        for name, F in (("user_factors", X), ("item_factors", Y)):
            if F.ndim != 2 or F.shape[1] != p["factors"] or F.dtype != p["dtype"]:
                raise ValueError(f"{where}: {name} has shape {F.shape} and dtype {F.dtype}, "
                                 f"expected (n, {p['factors']}) of {p['dtype'].name}")
        X, Y = _host_factors(X, Y, f"{where}: ")
        try:
            user_ids, item_ids = (_ids.checked_ids(contents.get(name), len(F), name)
                                  for name, F in (("user_ids", X), ("item_ids", Y)))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
        loss_history = contents["loss_history"]
        if loss_history.ndim != 1 or loss_history.dtype.kind not in "fiu":
            raise ValueError(f"{where}: loss_history has shape {loss_history.shape} and dtype "
                             f"{loss_history.dtype}, expected a 1-D array of numbers")
        model._set_fitted(get_backend(backend), X, Y, loss_history, user_ids, item_ids)
        return model


def _stored_params(stored: np.ndarray, where: str) -> dict[str, Any]:
    """The hyperparameters of a model file: ``stored``, its ``params`` array, holds one
    JSON object (text) naming them. ``where`` names the file in the errors."""
    text = stored.item() if stored.shape == () and stored.dtype.kind == "U" else None
    try:
        params = json.loads(text) if text is not None else None
    except ValueError as exc:
        raise ValueError(f"{where}: its hyperparameters are not valid JSON ({exc})") from None
    if not isinstance(params, dict):
        json_names = {list: "an array", str: "a string", bool: "a boolean", int: "a number",
                      float: "a number", type(None): "null"}
        found = (f"{json_names[type(params)]} in JSON" if text is not None
                 else f"an array of shape {stored.shape} and dtype {stored.dtype}")
        raise ValueError(f"{where}: its hyperparameters are {found}, expected one JSON "
                         f"object naming them")
    return params


def _host_factors(user_factors: Any, item_factors: Any,
                  where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Both factor arrays on the host, checked: 2-D arrays of real numbers with at least one
    row, finite, with the same number of columns. ``where`` prefixes the errors."""
    checked = []
    for name, F in (("user_factors", user_factors), ("item_factors", item_factors)):
        try:
            F = data.to_host(F)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{where}{name} is not an array of numbers ({exc})") from None
        if F.dtype.kind not in "fiu":
            raise TypeError(f"{where}{name} has dtype {F.dtype}, expected real numbers")
        if F.ndim != 2 or F.shape[0] == 0 or F.shape[1] == 0:
            raise ValueError(f"{where}{name} has shape {F.shape}, expected (n, factors) "
                             f"with n >= 1 and factors >= 1")
        if not np.isfinite(F).all():
            raise ValueError(f"{where}{name} holds NaN or infinite values")
        checked.append(F)
    X, Y = checked
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"{where}user_factors has {data.counted(X.shape[1], 'column')} but "
                         f"item_factors has {Y.shape[1]}: both need one column per factor")
    return X, Y


def _in_dtype(X: np.ndarray, Y: np.ndarray, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """Factors checked by :func:`_host_factors`, in ``dtype``: refused where a value is
    beyond its range (1e39 would be infinite in float32), or a row's norm beyond its
    square root, where the scores (``x_u . y_i``, and the squared norms of cosine
    similarity) would overflow it (queries answered NumPy's overflow warnings, and
    ``similar_items`` gave every item a score of 0)."""
    dtype, cast = np.dtype(dtype), []
    wider = " or use dtype=float64" if dtype == np.float32 else ""
    for name, F in (("user_factors", X), ("item_factors", Y)):
        with np.errstate(over="ignore"):
            in_dtype = F.astype(dtype, copy=False)
        if not np.isfinite(in_dtype).all():
            raise ValueError(f"{name} holds values up to {float(np.abs(F).max()):.3g} in "
                             f"magnitude, beyond what {dtype.name} holds: scale them "
                             f"down{wider}")
        norm = largest_norm(in_dtype)
        if norm >= score_limit(dtype):
            raise ValueError(f"{name} has rows of norm up to {norm:.3g}: their dot products "
                             f"(the scores) overflow {dtype.name}; scale them down{wider}")
        cast.append(in_dtype)
    return cast[0], cast[1]


def refuse_ids_with_frame(user_ids: Any, item_ids: Any) -> None:
    """A fit of a DataFrame takes its ids from its columns: ids given beside it are a
    ``TypeError``."""
    if user_ids is not None or item_ids is not None:
        raise TypeError("fit(df) takes its ids from the DataFrame's user and item "
                        "columns: pass user_ids / item_ids with a matrix only")


def _warm_rows(start: np.ndarray, current: np.ndarray, data_ids: Any, model_ids: Any,
               what: str) -> None:
    """Copy a fitted model's factors of ``what`` ("users" or "items"), ``current``, into
    a fit's ``start``: every row, by position, for data without ids (``data_ids`` None);
    else the rows whose id (in ``data_ids``) the model knows (in ``model_ids``)."""
    where = "warm_start=True"
    if current.shape[1] != start.shape[1]:
        raise ValueError(f"{where}: the model's factors have "
                         f"{data.counted(current.shape[1], 'column')}, not factors="
                         f"{start.shape[1]}; fit with warm_start=False to start afresh")
    if data_ids is None:
        if len(current) != len(start):
            raise ValueError(
                f"{where}: the model has {len(current):,} {what} and the matrix "
                f"{len(start):,}; a matrix's rows must be the model's (partial_fit_users / "
                f"partial_fit_items add rows), or fit with warm_start=False")
        start[:] = current
        return
    if model_ids is None:
        raise ValueError(
            f"{where}: the model has no {what[:-1]} ids to match the data's against (it was "
            f"fitted on a matrix without ids, or grown by partial_fit_{what}); fit a matrix "
            f"whose rows are the model's, or fit with warm_start=False")
    rows = data.id_positions(model_ids, data_ids)
    known = rows >= 0
    if len(rows) and not known.any():
        warnings.warn(f"{where}: none of the data's {what} is among the model's "
                      f"({len(model_ids):,}, e.g. {np.asarray(model_ids)[0].item()!r}); "
                      f"all start random", stacklevel=data.user_stacklevel())
    start[known] = current[rows[known]]


def _warn_unanswered(found: _id_queries.Recommendations, queried: str = "user",
                     ranked: str = "item") -> None:
    """Warn of what :meth:`ALS.recommend_frame` (or, ``queried`` "item" and ``ranked``
    "user", :meth:`ALS.recommend_users_frame`) ``found`` it could not use: queries neither
    in the model nor with interactions to fold in from, and rows of interactions naming
    what the model lacks."""
    if len(found.skipped):
        warnings.warn(f"no recommendations for {len(found.skipped):,} of the {queried}s: not in "
                      f"the model and no interactions with its {ranked}s to fold in "
                      f"({_id_queries.examples(found.skipped)})",
                      stacklevel=data.user_stacklevel())
    if found.n_unknown_item_rows:
        warnings.warn(f"rows of interactions that name {ranked}s the model lacks: "
                      f"{found.n_unknown_item_rows} left out",
                      stacklevel=data.user_stacklevel())


def _frame(frames, table: dict[str, Any], ids: dict[str, Any]):
    """``table`` as a DataFrame of ``frames`` (the pandas or polars module). polars types
    an empty object column as Object: an empty column of ids takes the type that polars
    gives the model's ids, ``ids[name]`` (None: factor rows, integers, never empty), so
    that a result without rows still concatenates with others."""
    if frames.__name__ == "polars":
        table = {name: frames.Series(name, np.asarray(ids[name])[:1])[:0]
                 if values.dtype == object and len(values) == 0 and ids.get(name) is not None
                 else values for name, values in table.items()}
    return frames.DataFrame(table)


def _frame_module(method: str, instead: str, like: Any = None):
    """The module whose DataFrame ``method`` returns: polars for a polars frame ``like``
    (polars in, polars out), else pandas, or polars where only polars is installed; an
    ImportError naming the extra and the method ``instead`` (which needs neither) where
    neither is."""
    if data._library(like) == "polars":
        return sys.modules["polars"]  # (imported: it made ``like``)
    for name in ("pandas", "polars"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError(f"{method} returns a DataFrame of pandas (or polars): pip install "
                      f"gpu-als[pandas] (or use {instead})")


def _side_names(side: str) -> tuple[str, str, str]:
    """For ``side`` "user" (or "item"): the other side, and the partial fits' names of
    the factor rows and of the interaction matrix ("userids", "user_items")."""
    other = "item" if side == "user" else "user"
    return other, f"{side}ids", f"{side}_{other}s"


#: The implicit library's name for the same estimator.
AlternatingLeastSquares = ALS


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b) and type(a) is type(b)
    except (TypeError, ValueError):
        return a is b


def _as_ids(ids: Any, name: str) -> tuple[np.ndarray, bool]:
    """``ids`` as a 1-D int64 array, and whether a scalar was given."""
    arr = np.asarray(ids)
    if arr.dtype.kind not in "iu" and arr.size > 0:
        hint = ""
        if arr.dtype.kind in "SU" or (arr.dtype.kind == "O" and any(
                isinstance(value, (str, bytes)) for value in arr.flat)):
            # the DataFrame's own ids, probably
            side = "user" if "user" in name else "item"
            hint = (f"; these are factor rows: after fit(df), row r is "
                    f"model.{side}_ids_[r], and model.{side}_rows(ids) gives the rows of "
                    f"ids (-1 for an unknown one)")
        given = (f"{type(ids).__name__} {ids.item()!r}" if isinstance(ids, np.generic)
                 else data.described(ids)) if arr.ndim == 0 else \
            f"an array of dtype {arr.dtype}"  # as check_int says it: "got float 2.5"
        raise TypeError(f"{name} must be an integer or an array of integers, got "
                        f"{given}{hint}")
    if arr.ndim > 1:
        raise ValueError(f"{name} must be a scalar or 1-D, got shape {arr.shape}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.uint64(np.iinfo(np.int64).max):
        # (int64 would wrap it round to a negative id, and the message would name that;
        # compared as uint64: NumPy 1 compares a uint64 with a Python int as float64)
        raise ValueError(f"{name} {int(arr.max())} is out of range: no model has that many "
                         f"rows")
    return arr.astype(np.int64).reshape(-1), arr.ndim == 0


def _as_id(value: Any, name: str) -> int:
    """One id (an integer scalar, or a 1-D array of one), for a method about one row."""
    ids, _ = _as_ids(value, name)
    if len(ids) != 1:
        raise ValueError(f"{name} must be a single id, got {len(ids)}")
    return int(ids[0])


def _check_range(ids: np.ndarray, n: int, name: str, what: str,
                 model_ids: np.ndarray | None = None) -> None:
    """Raise for an id outside ``range(n)``; where the model has original ids
    (``model_ids``: its ``user_ids_`` or ``item_ids_``), the message says that these ids
    are factor rows, since an integer id of one's own is the likely mistake."""
    bad = (ids < 0) | (ids >= n)
    if bad.any():
        hint = ""
        if model_ids is not None:
            side = what[:-1]  # "users" -> "user"
            hint = (f"; these are factor rows, not the model's own ids: row r is "
                    f"model.{side}_ids_[r], and model.{side}_rows(ids) gives the rows of "
                    f"ids (-1 for an unknown one)")
        raise ValueError(
            f"{name} {int(ids[bad][0])} is out of range: the model has {n} {what} "
            f"(valid ids 0..{n - 1}){hint}"
        )


def _eligible(filter_ids: Any, only_ids: Any, n: int, what: str = "items",
              model_ids: np.ndarray | None = None
              ) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    """An allowlist (``<what>``) or a blocklist (``filter_<what>``) of ``n`` users or items
    as :meth:`Backend.topk` takes them, ``(candidates, blocked)`` (None: no list), both
    sorted and distinct, and how many users or items stay eligible. A blocklist is not
    turned into candidates: gathering every other row's factors per query cost more than
    scoring them all."""
    if filter_ids is not None and only_ids is not None:
        raise ValueError(f"pass filter_{what} or {what}, not both")
    if only_ids is not None:
        ids = _sorted_distinct(only_ids, what, n, what, model_ids)
        return ids, None, len(ids)
    if filter_ids is not None:
        ids = _sorted_distinct(filter_ids, f"filter_{what}", n, what, model_ids)
        return None, ids, n - len(ids)
    return None, None, n


def _sorted_distinct(ids: Any, name: str, n: int, what: str,
                     model_ids: np.ndarray | None = None) -> np.ndarray:
    """Ids in ``range(n)``, checked, sorted and distinct."""
    ids, _ = _as_ids(ids, name)
    _check_range(ids, n, name, what, model_ids)
    if len(ids) > 1 and not (ids[1:] > ids[:-1]).all():  # not so already: sort
        ids = np.unique(ids)
    return ids
