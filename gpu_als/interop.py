"""Models of the implicit library as gpu-als models, and back.

    import implicit
    from gpu_als.interop import from_implicit, to_implicit

    theirs = implicit.als.AlternatingLeastSquares(factors=64).fit(user_items)
    model = from_implicit(theirs)          # or from_implicit("theirs.npz"), its save()
    model.recommend(0, user_items[0])      # the items and scores of theirs.recommend
    model.save("model.npz")                # then: gpu-als recommend model.npz ...
    theirs = to_implicit(model)            # a gpu-als model for code written for implicit

The factors are taken as they are, so every query (recommend, similar items, explain,
the evaluation metrics) answers as the implicit model does. The hyperparameters matter
only for what solves again (``fit``, the ``partial_fit_*`` methods, fold-in with
``recalculate_user``); they are translated so that those solve implicit's problem:

* ``alpha``: implicit's confidence is ``alpha * r``, gpu-als's ``1 + alpha * r`` (Hu,
  Koren & Volinsky 2008), so implicit's ``alpha = a`` becomes ``alpha = a - 1``. That
  is the same objective on 0/1 data; on other values the two confidences differ. With
  ``a < 1`` there is no such gpu-als ``alpha``: pass one (``alpha=...``).
* ``use_cg`` becomes ``solver="cg"`` with implicit's ``cg_steps``, else ``"cholesky"``;
  a model of implicit's GPU ALS (always CG) becomes ``solver="cg"``.
* ``factors``, ``regularization``, ``iterations``, ``random_state`` and
  ``calculate_training_loss`` are the same; float16 factors (implicit's GPU option)
  become float32.

Any gpu-als hyperparameter can be set instead with a keyword argument.
:func:`to_implicit` translates the other way (``alpha + 1``, ``solver`` to ``use_cg``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ._files import file_name, is_file_object, read_archive
from .backends import Backend
from .model import ALS, ITERATIVE_SOLVERS

__all__ = ["from_implicit", "to_implicit"]


def from_implicit(model_or_path: Any, *, backend: str | Backend = "auto",
                  **params: Any) -> ALS:
    """A fitted :class:`ALS` with the factors and the hyperparameters of an implicit model.

    Parameters
    ----------
    model_or_path : implicit.als.AlternatingLeastSquares, str, path-like or file object
        A fitted model of implicit's ALS (CPU or GPU), or a file its ``save()`` wrote
        (its path or URL, or a binary file object).
    backend : str or Backend, default "auto"
        Where the gpu-als model's factors go.
    **params
        gpu-als hyperparameters that replace the translated ones (see the module).

    Raises
    ------
    ValueError
        For a model that is not fitted, a file that is not an implicit ALS model, factors
        with NaN or infinite values, settings of the wrong kind (``iterations`` that is
        not an integer, say: a corrupted file's), or an implicit ``alpha`` below 1
        without ``alpha``.
    TypeError
        For an object that is neither an implicit ALS model nor a path.
    """
    if isinstance(model_or_path, (str, os.PathLike)) or is_file_object(model_or_path):
        found, where = _read_file(model_or_path), file_name(model_or_path)
    else:
        found, where = _read_model(model_or_path), type(model_or_path).__name__
    X, Y = found.pop("user_factors"), found.pop("item_factors")
    for name, F in (("user_factors", X), ("item_factors", Y)):
        if F.dtype.kind != "f":
            raise ValueError(f"{where}: {name} has dtype {F.dtype}, expected floats")
    try:  # a file's values are arrays of any kind: a corrupted one's say so here
        translated: dict[str, Any] = {
            "regularization": _setting(found, "regularization", 0.01, "a number"),
            "iterations": _setting(found, "iterations", 15, "an integer"),
            "solver": "cg" if _setting(found, "use_cg", True, "True or False") else "cholesky",
            "cg_steps": _setting(found, "cg_steps", 3, "an integer"),
            "calculate_training_loss": _setting(found, "calculate_training_loss", False,
                                                "True or False"),
            "dtype": np.float64 if X.dtype == np.float64 and Y.dtype == np.float64
            else np.float32,
        }
        implicit_alpha = _setting(found, "alpha", 1.0, "a number")
        seed = _setting(found, "random_state", None, "an integer")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where} holds invalid hyperparameters: {exc}") from None
    if seed is not None:
        translated["random_state"] = seed
    if "alpha" not in params:
        if implicit_alpha < 1:
            raise ValueError(
                f"{where}: implicit's alpha={implicit_alpha} (confidence alpha * r) has no "
                f"gpu-als equivalent (confidence 1 + alpha * r, alpha >= 0); pass alpha=...")
        translated["alpha"] = implicit_alpha - 1.0
    try:
        return ALS.from_factors(X, Y, **{**translated, **params, "backend": backend})
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def to_implicit(model: ALS):
    """The implicit library's CPU ALS model with the factors and hyperparameters of a
    fitted gpu-als ``model``: the inverse of :func:`from_implicit`.

    Its queries (``recommend``, ``similar_items``, ``explain``) answer as ``model``'s, and
    what it solves again (``recalculate_user``, ``partial_fit_*``, a refit, which goes on
    from these factors) solves ``model``'s problem on 0/1 data: ``alpha`` becomes
    ``alpha + 1`` (implicit's confidence is ``alpha * r``, gpu-als's ``1 + alpha * r``),
    ``solver`` becomes ``use_cg`` and ``cg_steps`` (``"pcg"``: implicit's CG, with
    as many steps; implicit has no preconditioned CG), and ``factors``, ``regularization``,
    ``iterations``, ``dtype``, ``calculate_training_loss`` and an integer ``random_state``
    carry over. Its ``to_gpu()`` gives implicit's GPU model.

    Raises
    ------
    ImportError
        Where implicit is not installed.
    ValueError
        For a model implicit's ALS cannot express: explicit feedback,
        ``confidence="log"``, ``scale_regularization=True`` or ``solver="nnls"``.
    NotFittedError
        For a model without factors.
    """
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError as exc:
        raise ImportError(f"to_implicit needs the implicit library (pip install implicit): "
                          f"{exc}") from exc
    if not isinstance(model, ALS):
        raise TypeError(f"model must be a gpu_als.ALS, got {type(model).__name__}")
    model._check_fitted()
    p = model._check_params()
    if p["feedback"] != "implicit":
        raise ValueError("feedback='explicit': implicit's ALS learns implicit feedback only")
    if p["scale_regularization"]:
        raise ValueError("scale_regularization=True: implicit's ALS has one penalty for "
                         "every row, not one scaled by each row's entries")
    if p["solver"] == "nnls":
        raise ValueError("solver='nnls': implicit's ALS has no nonnegative solver, so its "
                         "fold-ins and refits would not keep the factors nonnegative")
    if p["confidence"] != "linear":
        raise ValueError(f"confidence={p['confidence']!r}: implicit's ALS takes confidences "
                         f"alpha * r only (reweight the values before fitting instead)")
    X = np.array(model._backend.to_numpy(model.user_factors_))  # copies: never shared
    Y = np.array(model._backend.to_numpy(model.item_factors_))
    seed = model.random_state if isinstance(model.random_state, (int, np.integer)) else None
    theirs = AlternatingLeastSquares(
        factors=X.shape[1], regularization=p["regularization"], alpha=p["alpha"] + 1.0,
        dtype=X.dtype.type, use_cg=p["solver"] in ITERATIVE_SOLVERS, iterations=p["iterations"],
        calculate_training_loss=p["calculate_training_loss"], random_state=seed)
    theirs.cg_steps = p["cg_steps"]  # an attribute in implicit 0.7, not an argument
    theirs.user_factors, theirs.item_factors = X, Y
    return theirs


#: The array kinds (NumPy's ``dtype.kind``) that each kind of setting takes.
_KINDS = {"a number": "iuf", "an integer": "iu", "True or False": "b"}


def _setting(found: dict[str, Any], name: str, default: Any, expected: str) -> Any:
    """implicit's setting ``name`` in ``found`` (``default`` where it is left out), as the
    Python number or bool that ``expected`` names; a ValueError names a value of another
    kind or shape (a corrupted file's, or one set by hand on a live model), which
    implicit itself does not check."""
    value = found.get(name)
    if value is None:
        return default
    array = np.asarray(value)
    if array.shape != () or array.dtype.kind not in _KINDS[expected]:
        shown = f"{array.item()!r}" if array.shape == () else f"an array of shape {array.shape}"
        raise ValueError(f"{name} is {shown} ({array.dtype}), expected {expected}")
    return array.item()


def _read_model(model: Any) -> dict[str, Any]:
    """Factors and hyperparameters of a live implicit ALS model."""
    if type(model).__name__ != "AlternatingLeastSquares" or \
            not type(model).__module__.startswith("implicit"):
        raise TypeError(f"expected a model of implicit's AlternatingLeastSquares or a "
                        f"path, got {type(model).__module__}.{type(model).__name__}")
    gpu_model = "implicit.gpu" in type(model).__module__
    if gpu_model:
        model = model.to_cpu()  # NumPy factors; implicit's GPU fit is always CG
    if model.user_factors is None or model.item_factors is None:
        raise ValueError("the implicit model is not fitted yet (no factors)")
    found = {name: getattr(model, name) for name in (
        "regularization", "iterations", "use_cg", "cg_steps", "calculate_training_loss",
        "random_state", "alpha") if getattr(model, name, None) is not None}
    if not isinstance(found.get("random_state"), (int, np.integer)):
        found.pop("random_state", None)  # a generator: gpu-als's model gets no seed
    if gpu_model:
        found["use_cg"] = True
    found["user_factors"] = np.asarray(model.user_factors)
    found["item_factors"] = np.asarray(model.item_factors)
    return found


def _read_file(path: Any) -> dict[str, Any]:
    """Factors and hyperparameters of a file written by implicit's ``save()``."""
    # implicit pickles a random_state that is a generator: the model then gets no seed,
    # as from a live model
    contents = read_archive(path, "implicit model", skip_pickled=("random_state",))
    path = file_name(path)  # as the errors name it
    if "format" in contents:
        raise ValueError(f"{path} is a gpu-als model file: read it with ALS.load")
    if "learning_rate" in contents:
        raise ValueError(f"{path} holds an implicit BPR or LMF model, not ALS (their "
                         f"factors carry bias columns and another objective)")
    missing = {"user_factors", "item_factors"} - set(contents)
    if missing:
        raise ValueError(f"{path} is not an implicit ALS model file (missing: "
                         f"{', '.join(sorted(missing))})")
    return contents
