"""The alternation loop and the checks around it, shared by ``ALS.fit``,
:func:`gpu_als.tune.tune` and :func:`gpu_als.distributed.fit_distributed`.

:class:`Training` is one fit in progress: the data on its backend, the factors, the loss
history; ``ALS.fit`` runs one to the end, a search runs several a few iterations at a
time. Around it: the refusals made before any work (systems that are all singular, a fit
beyond host memory, a callback that cannot be called), the warnings of settings that act
on nothing, and the check of the factors a fit ends with (non-finite values, or rows so
long that their scores overflow the dtype).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from . import _ids, data
from .backends import Backend, get_backend
from .backends.base import regularized_gram

if TYPE_CHECKING:
    from .model import ALS

logger = logging.getLogger("gpu_als")


# ---- before any work ----------------------------------------------------------------


def check_callback(callback: Any) -> None:
    """Refuse a fit callback that is not callable, or that cannot be called as
    ``callback(iteration, seconds, loss)`` where its signature says so: before the first
    iteration, not after it."""
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {type(callback).__name__}")
    try:
        signature = inspect.signature(callback)
    except (TypeError, ValueError):  # a callable without a signature to read: tried as is
        return
    try:
        signature.bind(0, 0.5, 1.0)
    except TypeError as exc:
        name = getattr(callback, "__name__", type(callback).__name__)
        raise TypeError(f"callback must take three arguments, callback(iteration, seconds, "
                        f"loss); {name}{signature} cannot ({exc})") from None


def check_definite(p: dict[str, Any], n_fixed: int, fixed: str, factors: int) -> None:
    """Implicit feedback with regularization 0: each row's system F^T C_u F (C_u >= I) has
    the rank of the fixed factors F, so with fewer fixed rows than factors every system is
    singular. Refused before any work, alike on every backend."""
    if p["feedback"] == "implicit" and p["regularization"] == 0 and n_fixed < factors:
        raise ValueError(
            f"regularization=0 with factors={factors} and {n_fixed} {fixed}: Y^T Y, and with "
            f"it every user's and item's system, is singular; use regularization > 0 or "
            f"factors <= {n_fixed}")


def check_definite_base(p: dict[str, Any], fixed_gram: Any, n_fixed: int,
                        backend: Backend, solver: str | None = None) -> None:
    """Before a half-step (or a fold-in) of implicit feedback without regularization, by a
    solver (default: the model's) that factorizes the shared part ``F^T F``
    (``fixed_gram``, on ``backend``): the exact one, where every row's system has the rank
    of the fixed factors, and PCG, whose preconditioner is its Cholesky factor. Both are
    singular where ``F^T F`` is (all zero after a half-step of no positive value, say, or a
    factor space that collapsed): refused on the host, as the CPU backend refuses it, for
    every backend (a GPU's Cholesky says so only by NaN, "numerically unstable"). One
    k x k copy a half-step, for this setting alone; CG's steps need no definite base."""
    if p["feedback"] == "implicit" and p["regularization"] == 0 and \
            (solver or p["solver"]) in ("cholesky", "pcg"):
        regularized_gram(backend.to_numpy(fixed_gram).astype(np.float64), 0.0, n_fixed)


def check_fit_shape(user_items: Any, p: dict[str, Any]) -> None:
    """Refuse, before any work, a fit of the matrix ``user_items`` that cannot fit in host
    memory or whose systems are all singular: alike for ``fit``, a search and
    :func:`gpu_als.distributed.fit_distributed`. (What is not a 2-D matrix is refused
    as such by :class:`gpu_als.data.Prepared`.)"""
    shape = getattr(user_items, "shape", None)
    if shape is not None and len(shape) == 2:
        check_fit_dimensions(shape, p)


def check_fit_dimensions(shape: tuple[int, int], p: dict[str, Any]) -> None:
    """:func:`check_fit_shape` of a matrix of ``shape`` (users, items)."""
    check_fit_memory(shape, p)
    n_fixed, fixed = min(zip(shape, ("users", "items")))
    if n_fixed > 0:  # (an empty matrix: refused as such by Prepared, not as singular)
        check_definite(p, n_fixed, fixed if n_fixed > 1 else fixed[:-1], p["factors"])


def check_fit_memory(shape, p: dict[str, Any]) -> None:
    """Refuse a fit that cannot fit in host memory before allocating any of it: the row
    pointers of both orientations and the factors of every user and item (drawn on the
    host on every backend), and three k x k matrices in float64 (a side's Gram matrix,
    regularized, and its Cholesky factor; NumPy's bare "Unable to allocate 37.3 GiB"
    at factors=100,000 before)."""
    n, k = int(shape[0]) + int(shape[1]), p["factors"]
    rows, systems = n * (8 + k * np.dtype(p["dtype"]).itemsize), 3 * k * k * 8
    hint = "; are the ids compact (from_dataframe codes any ids as 0..n-1)?" \
        if rows >= systems else f"; its {k:,} x {k:,} systems alone take most of it"
    data.check_memory(rows + systems, f"a fit of {shape[0]:,} users x {shape[1]:,} items "
                      f"at factors={k:,}", hint)


def warn_idle_factors(shape: tuple[int, int], factors: int) -> None:
    """Warn of more factors than users or items (of a fit of a ``shape`` matrix, its
    input checked): ``X Y^T`` has rank at most the fewer side's count, so the factors
    beyond it fit nothing and are set by the regularization alone (and a small one leaves
    every system near singular: a float32 fit on a GPU may then fail)."""
    n_fixed, fixed = min(zip(shape, ("users", "items")))
    if 0 < n_fixed < factors:
        rows = fixed if n_fixed > 1 else fixed[:-1]  # "1 item"
        dimensions = "dimensions" if n_fixed > 1 else "dimension"
        warnings.warn(f"factors={factors} with {n_fixed} {rows}: the factors span at most "
                      f"{n_fixed} {dimensions}, and the other {factors - n_fixed} fit nothing "
                      f"(only the regularization sets them); factors={n_fixed} can fit the "
                      f"data as well, for less work", UserWarning,
                      stacklevel=data.user_stacklevel())


def idle_settings(p: dict[str, Any]) -> dict[str, str]:
    """The hyperparameters that the others (in ``p``, resolved) make act on nothing, each
    with what makes it idle: ``alpha``, ``confidence`` and ``epsilon`` with explicit
    feedback (no confidences), ``epsilon`` with linear confidence, ``cg_steps`` with the
    exact solvers (Cholesky and NNLS)."""
    idle = {}
    if p["feedback"] == "explicit":
        idle.update(dict.fromkeys(("alpha", "confidence", "epsilon"),
                                  "feedback='explicit' (ratings, no confidences)"))
    elif p["confidence"] == "linear":
        idle["epsilon"] = "confidence='linear'"
    if p["solver"] in ("cholesky", "nnls"):
        idle["cg_steps"] = f"solver={p['solver']!r}"
    return idle


def warn_idle_settings(p: dict[str, Any], defaults: dict[str, Any],
                       skip: Iterable[str] = ()) -> None:
    """Warn of hyperparameters set (away from their ``defaults``) where the others make
    them act on nothing (:func:`idle_settings`), as scikit-learn warns of ``l1_ratio``
    without an elastic-net penalty; not of those in ``skip``."""
    changed: dict[str, list[str]] = {}  # what makes them idle: those set
    for name, reason in idle_settings(p).items():
        if p[name] != defaults[name] and name not in skip:
            changed.setdefault(reason, []).append(f"{name}={p[name]!r}")
    idle = [f"{', '.join(names)} {'has' if len(names) == 1 else 'have'} no effect with "
            f"{reason}" for reason, names in changed.items()]
    if idle:
        warnings.warn("; ".join(idle), UserWarning, stacklevel=data.user_stacklevel())


# ---- the iterations -----------------------------------------------------------------


class Training:
    """One fit in progress: the data on its backend, the factors, the loss history.

    ``ALS.fit`` runs one to the end; ``gpu_als.tune`` runs several a few iterations at a
    time. ALS is deterministic, so running n iterations and then m more gives exactly the
    model of n + m iterations.
    """

    def __init__(self, model: ALS, user_items: Any, ids: tuple[Any, Any] = (None, None), *,
                 searched: Iterable[str] = ()):
        """``ids``: the ids of ``user_items``' rows and columns, or None (see ``ALS.fit``);
        ``searched``: the hyperparameters a search's grid sets, not warned of where idle
        (the search trains each such model once)."""
        p = model._check_params()
        warn_idle_settings(p, type(model)._param_defaults(), skip=searched)
        backend = get_backend(model.backend)
        if backend.max_factors is not None and p["factors"] > backend.max_factors:
            raise ValueError(
                f"factors={p['factors']}: the {backend.name.upper()} backend supports "
                f"factors <= {backend.max_factors}"
            )
        check_fit_shape(user_items, p)  # before Prepared allocates
        prepared = user_items if isinstance(user_items, data.Prepared) \
            else data.Prepared(user_items, p["dtype"])
        if prepared.dtype != p["dtype"]:
            prepared = data.Prepared(prepared.csr, p["dtype"])
        warn_idle_factors(prepared.shape, p["factors"])
        self.p, self.backend = p, backend
        self.ids = _ids.checked_data_ids(ids, prepared.shape)
        self.Cu, self.Ci = prepared.on_backend(
            backend, feedback=p["feedback"], alpha=p["alpha"], confidence=p["confidence"],
            epsilon=p["epsilon"])
        self.X, self.Y = model._initial_factors(backend, prepared.shape, p["factors"],
                                                p["dtype"], self.ids)
        self.YtY = backend.gram(self.Y)
        self.loss_history: list[float] = []
        self.iterations_done = 0
        self.seconds = 0.0

    def run(self, iterations: int, *, show_progress: bool = False, callback=None,
            log: bool = True) -> bool:
        """``iterations`` more sweeps: a user half-step, an item half-step, the loss (when
        it is calculated), each logged at INFO unless ``log`` is false (a search logs its
        trials instead). True when the callback stopped them early (see
        :func:`asks_to_stop`)."""
        p, backend = self.p, self.backend
        X, Y = self.X, self.Y
        with_loss = p["calculate_training_loss"]

        def solve(rows, fixed, fixed_gram, out):
            check_definite_base(p, fixed_gram, fixed.shape[0], backend)
            backend.solve_rows(rows, fixed, fixed_gram, regularization=p["regularization"],
                               feedback=p["feedback"], out=out, solver=p["solver"],
                               cg_steps=p["cg_steps"],
                               scale_regularization=p["scale_regularization"])

        start = time.perf_counter() - self.seconds
        stopped = False
        bases = None
        progress = tqdm(
            range(self.iterations_done, self.iterations_done + iterations),
            desc=f"ALS ({backend.name})", unit="it", disable=None if show_progress else True,
        )
        with progress, backend.reusing_buffers():
            for iteration in progress:
                bases = {"user": (self.YtY, Y.shape[0])}  # (kept for raise_non_finite)
                with backend.range("user half-step"):
                    solve(self.Cu, Y, self.YtY, X)
                with backend.range("item half-step"):
                    bases["item"] = (backend.gram(X), X.shape[0])
                    solve(self.Ci, X, bases["item"][0], Y)
                    self.YtY = backend.gram(Y)
                loss = None
                if with_loss:
                    with backend.range("training loss"):
                        loss = backend.loss(self.Cu, X, Y, self.YtY,
                                            regularization=p["regularization"],
                                            feedback=p["feedback"],
                                            scale_regularization=p["scale_regularization"])
                    if not math.isfinite(loss):  # NaN or inf in X or Y propagate to it
                        raise_non_finite(backend, X, Y, iteration, p,
                                         largest_input(self.Cu, p), bases)
                    self.loss_history.append(loss)
                    progress.set_postfix(loss=f"{loss:.5g}")
                self.iterations_done += 1
                self.seconds = time.perf_counter() - start
                if log:
                    log_iteration(self.iterations_done, loss, self.seconds)
                if callback is not None and asks_to_stop(
                        callback(iteration, self.seconds, loss)):
                    stopped = True
                    break
        if not with_loss and iterations > 0 and not (
                backend.all_finite(X) and backend.all_finite(Y)
                and overflowing_norm(backend, X, Y) is None):
            raise_non_finite(backend, X, Y, self.iterations_done - 1, p,
                             largest_input(self.Cu, p), bases)
        return stopped

    def state(self) -> dict[str, Any]:
        """Where this fit stands, on the host (NumPy factors), for :meth:`resume`: a
        search on a cluster hands it from one rung's task to the next
        (:func:`gpu_als.tune.tune`'s ``client``)."""
        return {"X": self.backend.to_numpy(self.X), "Y": self.backend.to_numpy(self.Y),
                "loss_history": list(self.loss_history),
                "iterations_done": self.iterations_done, "seconds": self.seconds}

    def resume(self, state: dict[str, Any]) -> None:
        """Go on from :meth:`state` of a fit of the same model and data: its next
        iterations are those that fit's would have been."""
        # copies: run() updates the factors in place, and ``state`` may be another task's
        # result that Dask still holds
        self.X = self.backend.asarray(np.array(state["X"], dtype=self.p["dtype"]))
        self.Y = self.backend.asarray(np.array(state["Y"], dtype=self.p["dtype"]))
        self.YtY = self.backend.gram(self.Y)
        self.loss_history = list(state["loss_history"])
        self.iterations_done = state["iterations_done"]
        self.seconds = state["seconds"]

    def reporting(self, model: ALS, callback: Callable) -> Callable:
        """``callback`` for :meth:`run`, called once ``model`` holds the iterations so far
        (so that it may query the model: see ``ALS``'s ``callback``)."""
        def report(iteration: int, seconds: float, loss: float | None) -> Any:
            self.finish(model)
            return callback(iteration, seconds, loss)
        return report

    def finish(self, model: ALS) -> None:
        """Hand the factors to ``model`` (only now: a failed fit leaves no model)."""
        model.user_factors_ = self.X
        model.item_factors_ = self.Y
        model.loss_history_ = list(self.loss_history)
        model.backend_ = self.backend.name
        model._backend = self.backend
        model.user_ids_, model.item_ids_ = self.ids
        model._remember_factors()


def log_iteration(done: int, loss: float | None, seconds: float) -> None:
    """An INFO line for each iteration of a fit, for logs where no progress bar shows (a
    batch job's, ``gpu-als train -v``)."""
    if logger.isEnabledFor(logging.INFO):
        logger.info("iteration %d: %s%.3g s so far", done,
                    "" if loss is None else f"loss {loss:.6g}, ", seconds)


def asks_to_stop(returned: Any) -> bool:
    """Whether a fit callback's return value stops the fit: ``True`` (or NumPy's) only,
    so that a callback returning something else by the way (``file.write``'s count, a
    list's ``append``) never ends a fit."""
    return isinstance(returned, (bool, np.bool_)) and bool(returned)


# ---- the factors a fit ends with ----------------------------------------------------


def largest_input(rows: data.WeightedRows, p: dict[str, Any]) -> float:
    """The largest confidence (implicit feedback) or rating magnitude (explicit) of
    ``rows``, on any backend (never empty: fit refuses a matrix without entries), for
    :func:`raise_non_finite`."""
    if p["feedback"] == "implicit":  # weight = c - 1
        return 1 + float(abs(rows.weight).max())
    return float(abs(rows.target).max())


def raise_non_finite(backend: Backend, X, Y, iteration: int, p: dict[str, Any],
                     largest: float, bases: dict[str, tuple[Any, int]] | None = None):
    """Name the half-step that produced NaN or infinite factors, or say that finite
    factors grew so large that the training loss overflowed; with the ``largest``
    confidence (implicit) or rating (explicit) of the input (:func:`largest_input`).

    Checked once per iteration through the loss (any non-finite factor makes it
    non-finite), so that the GPU need not synchronise after every half-step; without
    the loss, once at the end of the fit. ``bases``: by side, the fixed factors' Gram
    matrix that the (last) iteration's half-step solved with and their number of rows,
    for :func:`refuse_singular_base`.
    """
    side = "user" if not backend.all_finite(X) else \
        "item" if not backend.all_finite(Y) else None
    if side is not None and bases is not None:
        refuse_singular_base(backend, p, *bases[side])
    where = f"the {side or 'item'} half-step of iteration {iteration}" \
        if p["calculate_training_loss"] else \
        f"iteration {iteration} (checked at the end of fit; calculate_training_loss=True " \
        "finds the first bad half-step)"
    if side is None and not p["calculate_training_loss"]:  # (the scores overflow)
        what = (f"the factors grew so large (rows of norm up to "
                f"{overflowing_norm(backend, X, Y):.3g}) that their scores overflow "
                f"{np.dtype(X.dtype).name} after {where}")
    elif side is None:
        factor = max(float(backend.xp.abs(F).max()) for F in (X, Y))
        what = (f"the factors grew so large (up to {factor:.3g}) that the training loss "
                f"overflowed after {where}")
    else:
        what = f"the {side} factors hold NaN or infinite values after {where}"
    scale = f"{'confidences' if p['feedback'] == 'implicit' else 'ratings'} up to " \
        f"{largest:.3g}"
    alpha = f", alpha={p['alpha']}" if p["feedback"] == "implicit" else ""
    # float64 holds what overflowed float32 and carries what its rounding lost (a GPU
    # solves a float32 model's systems in float32, the CPU backend its exact ones in
    # float64): in float32, the way out
    wider = " in float32; use dtype=float64 for double precision" \
        if np.dtype(X.dtype) == np.float32 else ""
    if p["solver"] == "nnls":  # float64 may not be the way out: its systems are not
        # whitened, so the regularization's part of them is lost to rounding
        wider = ("; the NNLS solver's systems, not whitened as the exact solver's, are "
                 "numerically singular in float64 where the confidences dwarf the "
                 "regularization: scale the values down (confidence='log' for counts) or "
                 "use a larger regularization" +
                 (", or dtype=float64 (whose factors hold larger values)"
                  if np.dtype(X.dtype) == np.float32 else ""))
    raise FloatingPointError(
        f"{what}; the input ({scale}) or the hyperparameters (regularization="
        f"{p['regularization']}{alpha}) make the problem numerically unstable{wider}"
    )


def refuse_singular_base(backend: Backend, p: dict[str, Any], fixed_gram: Any,
                         n_fixed: int) -> None:
    """After a half-step gave NaN: where its solver factorizes the shared part (implicit
    feedback, the exact solver or PCG, the penalty not scaled) and ``fixed_gram + lambda
    I`` (finite) is numerically singular in float64, the CPU backend's ValueError
    (:func:`gpu_als.backends.base.regularized_gram`): a GPU's Cholesky says so only by
    NaN, which "numerically unstable, use float64" would misname (float64 is where it is
    singular). Checked on the host after the fact, so that no half-step waits for it."""
    if p["feedback"] != "implicit" or p["scale_regularization"] or \
            p["solver"] not in ("cholesky", "pcg"):
        return
    FtF = backend.to_numpy(fixed_gram).astype(np.float64)
    if np.isfinite(FtF).all():
        regularized_gram(FtF, p["regularization"], n_fixed)


def overflowing_norm(backend: Backend, *factors: Any) -> float | None:
    """The largest row norm of the finite ``factors`` (arrays of one dtype on
    ``backend``) where it is beyond the square root of their dtype's largest value, so
    that the scores ``x_u . y_i`` may overflow (as ``model._in_dtype`` refuses for given
    factors); else None. Their largest values tell at once, without a copy, in all but
    that case."""
    limit = score_limit(factors[0].dtype)
    largest = max(max(float(F.max()), -float(F.min())) for F in factors)
    if largest * math.sqrt(factors[0].shape[1]) < limit:
        return None
    norm = max(largest_norm(backend.to_numpy(F)) for F in factors)
    return norm if norm >= limit else None


def score_limit(dtype: Any) -> float:
    """The row norm from which factors of ``dtype`` may have scores (dot products, squared
    norms) beyond its largest value: that value's square root (1.8e19 in float32)."""
    return math.sqrt(float(np.finfo(dtype).max))


def largest_norm(F: np.ndarray) -> float:
    """The largest Euclidean norm of ``F``'s rows, without overflow: the rows whose
    largest value could take their squared norm beyond ``F``'s dtype are scaled by it, in
    float64, first."""
    largest = np.maximum(F.max(axis=1), -F.min(axis=1))  # (no copy of F, as np.abs)
    wide = largest >= score_limit(F.dtype) / math.sqrt(F.shape[1])  # |row| <= m sqrt(k)
    narrow = F[~wide] if wide.any() else F
    norm = float(np.sqrt(np.einsum("ij,ij->i", narrow, narrow).max())) if len(narrow) else 0.0
    if wide.any():
        scale = largest[wide].astype(np.float64)[:, None]
        scaled = F[wide] / scale
        norm = max(norm, float((scale[:, 0] * np.sqrt(np.einsum("ij,ij->i", scaled,
                                                                scaled))).max()))
    return norm
