"""A NumPy shaped like CuPy, for running code written for CuPy on the host."""

import types

import numpy as np


def cupy_shaped_numpy():
    """NumPy as code written for CuPy sees CuPy: a module that is not ``numpy`` (so
    ``top_n`` takes its CuPy branches), without ``lexsort`` on a tuple of keys (CuPy's
    takes one 2-D array), without the ``kind`` of sorts (older CuPy rejects it), with
    ``repeat`` refusing an array of counts (as CuPy's), with CuPy's
    ``random.default_rng``, and counting the full row sorts, which CuPy's
    ``argpartition`` is. Its arrays are NumPy's."""
    xp = types.SimpleNamespace(**{name: getattr(np, name) for name in dir(np)
                                  if not name.startswith("_")})
    xp.full_row_sorts = 0

    def lexsort(keys):
        assert isinstance(keys, np.ndarray) and keys.ndim == 2, "CuPy: one 2-D array"
        return np.lexsort(keys)

    def argsort(a, axis=-1, **kwargs):
        assert not kwargs, f"CuPy's argsort takes no {sorted(kwargs)}"
        return np.argsort(a, axis=axis, kind="stable")  # CuPy's sorts are stable

    def argpartition(a, kth, axis=-1):
        xp.full_row_sorts += 1
        return np.argsort(a, axis=axis, kind="stable")  # as CuPy: a full sort

    def sort(a, axis=-1, **kwargs):
        assert not kwargs, f"CuPy's sort takes no {sorted(kwargs)}"
        return np.sort(a, axis=axis, kind="stable")

    def repeat(a, repeats, axis=None):
        assert isinstance(repeats, (int, list, tuple)), "CuPy: repeats an int or a list"
        return np.repeat(a, repeats, axis=axis)

    xp.lexsort, xp.argsort, xp.argpartition = lexsort, argsort, argpartition
    xp.sort, xp.repeat = sort, repeat
    xp.random = types.SimpleNamespace(default_rng=np.random.default_rng)
    return xp
