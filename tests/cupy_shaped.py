"""A NumPy shaped like CuPy, for running code written for CuPy on the host.

``cupy_shaped_numpy()`` has CuPy's functions (as far as the package uses them) and NumPy's
arrays. ``cupy_shaped_numpy(device_arrays=True)`` also has arrays that keep CuPy's rule on
host and device memory (:class:`DeviceArray`): on a GPU, code that hands a device array to
NumPy, SciPy or a host array fails with a ``TypeError``; here it fails the same way, in CI,
rather than on the first run on a GPU. What reads their values on the host (on a GPU, a
wait for the device) is counted in :data:`host_reads`.
"""

import collections
import contextlib
import functools
import types

import numpy as np


def cupy_shaped_numpy(device_arrays: bool = False):
    """NumPy as code written for CuPy sees CuPy: a module that is not ``numpy`` (so
    ``top_n`` takes its CuPy branches), without ``lexsort`` on a tuple of keys (CuPy's
    takes one 2-D array), without the ``kind`` of sorts (older CuPy rejects it), with
    ``repeat`` refusing an array of counts (as CuPy's), with CuPy's
    ``random.default_rng``, and counting the full row sorts, which CuPy's
    ``argpartition`` is. Its arrays are NumPy's, or with ``device_arrays``
    :class:`DeviceArray` (see :func:`_on_device` for what changes then)."""
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
    return _on_device(xp) if device_arrays else xp


#: What read device arrays' values on the host, by operation (``get``, ``int``, ``mask[]``,
#: ``flatnonzero`` ...): on a GPU each of them waits for the work queued before it (CuPy's
#: boolean indexing and ``nonzero``-like functions too, which size their result so). Tests
#: clear it and count.
host_reads: collections.Counter = collections.Counter()

#: The array module's functions whose result's size depends on the values (a host read).
SIZED_BY_VALUES = frozenset({"argwhere", "flatnonzero", "nonzero", "unique"})

IMPLICIT_CONVERSION = ("Implicit conversion to a NumPy array is not allowed. Please use "
                       "`.get()` to construct a NumPy array explicitly.")  # CuPy's words

#: NumPy's that CuPy (14) lacks: module functions, linalg's, array attributes.
NOT_IN_CUPY = frozenset({
    "asmatrix", "block", "bmat", "einsum_path", "errstate", "frompyfunc", "geomspace",
    "geterr", "histogram_bin_edges", "insert", "isnat", "matvec", "nanpercentile",
    "nanquantile", "polyder", "polydiv", "polyint", "seterr", "spacing", "unstack",
    "vecdot", "vecmat",
})
NOT_IN_CUPY_LINALG = frozenset({
    "diagonal", "matrix_norm", "multi_dot", "outer", "svdvals", "tensordot", "trace",
    "vecdot", "vector_norm",
})
NOT_ON_CUPY_ARRAYS = frozenset({"ctypes", "getfield", "resize", "setfield", "setflags",
                                "to_device"})
#: What ``cupy.random.Generator`` draws.
CUPY_GENERATOR = frozenset({
    "beta", "binomial", "chisquare", "dirichlet", "exponential", "f", "gamma", "geometric",
    "hypergeometric", "integers", "logseries", "poisson", "power", "random",
    "standard_exponential", "standard_gamma", "standard_normal", "uniform",
})


class DeviceArray(np.lib.mixins.NDArrayOperatorsMixin):
    """A NumPy array standing for one in device memory, with CuPy's rules:

    * NumPy does not take it (``np.asarray``, a host array indexed by it, SciPy): a
      ``TypeError``, as from CuPy's ``__array__``; ``get()`` copies it to the host;
    * arithmetic and the array module's functions refuse host arrays among device ones
      (CuPy: "Unsupported type"); NumPy and Python scalars are taken;
    * reductions and integer indexing give 0-d arrays, not scalars, and a 0-d array is
      no index (``range(a.sum())`` fails: CuPy arrays have no ``__index__``);
    * it has no ``ctypes`` and the other attributes CuPy arrays lack; ``data.ptr`` is
      its address;
    * what reads its values on the host (``get``, ``int()``, ``bool()``, ``float()``,
      formatting, ``item``, ``tolist``, indexing by a boolean array) counts in
      :data:`host_reads`.

    Indexing a device array with host arrays and assigning host values to its elements
    are allowed, as in CuPy (which copies them to the device).
    """

    # weak references for the emulated runtime's address table (NumPy < 1.25's mixin has
    # no __slots__, so its instances have them already)
    __slots__ = ("_a",) + (() if hasattr(np.lib.mixins.NDArrayOperatorsMixin, "__weakref__")
                           else ("__weakref__",))

    def __init__(self, array: np.ndarray):
        self._a = array

    # What NumPy may not do with it
    def __array__(self, *args, **kwargs):
        raise TypeError(IMPLICIT_CONVERSION)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        where = f"numpy.{ufunc.__name__}"
        out = kwargs.get("out")
        if out is not None:
            kwargs["out"] = tuple(_device_operand(o, where) for o in out)
        result = getattr(ufunc, method)(*(_device_operand(x, where) for x in inputs),
                                        **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        if func.__name__ in NOT_IN_CUPY:
            raise TypeError(f"numpy.{func.__name__} has no CuPy counterpart")
        where = f"numpy.{func.__name__}"
        return _wrap(func(*_device_operands(args, where), **_device_operands(kwargs, where)))

    def get(self, stream=None) -> np.ndarray:
        """A host copy (CuPy's ``ndarray.get``)."""
        host_reads["get"] += 1
        return self._a.copy()

    @property
    def data(self):
        """CuPy's ``MemoryPointer``, as far as ``.ptr`` (the address)."""
        return types.SimpleNamespace(ptr=self._a.ctypes.data)

    # The rest as NumPy's, with device arrays in and out
    def __getattr__(self, name: str):
        # no __array_interface__ and the like either: NumPy would read the memory through it
        if name == "_a" or name.startswith("__") or name in NOT_ON_CUPY_ARRAYS:
            raise AttributeError(f"{type(self).__name__} (as a CuPy array) has no {name!r}")
        value = getattr(self._a, name)
        if name in ("item", "tolist"):
            host_reads[name] += 1
        if callable(value):
            return _on_device_function(value, f"ndarray.{name}")
        return _wrap(value)

    def __setattr__(self, name: str, value) -> None:  # a.shape = ... as on NumPy's
        if name == "_a":
            object.__setattr__(self, name, value)
        else:
            setattr(self._a, name, value)

    def __getitem__(self, key):
        if any(isinstance(k, DeviceArray) and k.dtype == bool
               for k in (key if isinstance(key, tuple) else (key,))):
            host_reads["mask[]"] += 1  # (CuPy sizes the result by the mask's count)
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value) -> None:
        self._a[_index(key)] = value._a if isinstance(value, DeviceArray) else value

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        return (_wrap(v) for v in self._a)

    def __bool__(self) -> bool:
        host_reads["bool"] += 1
        return bool(self._a)

    def __int__(self) -> int:
        host_reads["int"] += 1
        return int(self._a)

    def __float__(self) -> float:
        host_reads["float"] += 1
        return float(self._a)

    def __complex__(self) -> complex:
        host_reads["complex"] += 1
        return complex(self._a)

    def __format__(self, spec: str) -> str:
        host_reads["format"] += 1
        return format(self._a, spec)

    def __repr__(self) -> str:
        host_reads["repr"] += 1
        return f"DeviceArray({self._a!r})"

    def __reduce__(self):  # pickled as CuPy's arrays are: by their values
        return DeviceArray, (self._a.copy(),)


def _wrap(value):
    """NumPy results as device arrays (a NumPy scalar as a 0-d array, as CuPy gives)."""
    if isinstance(value, np.ndarray):
        return DeviceArray(value)
    if isinstance(value, np.generic):
        return DeviceArray(np.asarray(value))
    if isinstance(value, tuple):  # also a named tuple (np.unique_all, ...)
        items = [_wrap(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _device_operand(value, where: str):
    """``value`` for NumPy: a device array's array; a host array is refused."""
    if isinstance(value, DeviceArray):
        return value._a
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)} in {where}: a host array among "
                        f"device arrays (copy it with xp.asarray first)")
    if isinstance(value, (list, tuple)):
        return type(value)(_device_operand(v, where) for v in value)
    return value


def _device_operands(values, where: str):
    if isinstance(values, dict):
        return {key: _device_operand(v, where) for key, v in values.items()}
    return tuple(_device_operand(v, where) for v in values)


def _index(key):
    """An index for the underlying array: device arrays unwrapped, host ones allowed."""
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    return key._a if isinstance(key, DeviceArray) else key


def _on_device_function(function, where: str, sized_by_values: bool = False):
    @functools.wraps(function)
    def on_device(*args, **kwargs):
        if sized_by_values:
            host_reads[function.__name__] += 1
        return _wrap(function(*_device_operands(args, where),
                              **_device_operands(kwargs, where)))
    return on_device


def _asarray(a, dtype=None, order=None):
    """CuPy's ``asarray``: a device array as it is (or cast), anything else copied over."""
    if isinstance(a, DeviceArray):
        if dtype is None or np.dtype(dtype) == a.dtype:
            return a
        return DeviceArray(a._a.astype(dtype))
    return DeviceArray(np.array(a, dtype=dtype, order=order or "K"))


def _array(a, dtype=None, copy=True, order="K", **kwargs):
    """CuPy's ``array``: a new device array unless ``copy=False`` allows ``a`` itself."""
    if isinstance(a, DeviceArray):
        return DeviceArray(np.array(a._a, dtype=dtype, copy=copy, order=order, **kwargs))
    return DeviceArray(np.array(a, dtype=dtype, order=order, **kwargs))


def _ascontiguousarray(a, dtype=None):
    if isinstance(a, DeviceArray) and a._a.flags.c_contiguous and \
            (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    source = a._a if isinstance(a, DeviceArray) else a
    return DeviceArray(np.ascontiguousarray(source, dtype=dtype))


def _nan_where_singular(function):
    """NumPy's ``linalg.solve`` or ``inv`` (``function``) as CuPy's: a singular matrix of
    a batch raises nothing (CuPy checks its LU's pivots only under
    ``cupyx.errstate(linalg="raise")``) and gets a non-finite result (its zero pivot's;
    here NaN), the others theirs; NumPy raises for the whole batch."""
    @functools.wraps(function)
    def as_cupy(a, *b):
        try:
            return function(a, *b)
        except np.linalg.LinAlgError:
            if a.ndim == 2:
                return np.full((b[0] if b else a).shape, np.nan)
            out = np.full((b[0] if b else a).shape, np.nan, np.result_type(a, *b))
            for j in range(len(a)):
                with contextlib.suppress(np.linalg.LinAlgError):
                    out[j] = function(a[j], *(c[j] for c in b))
            return out
    return as_cupy


def _cholesky_as_cupy(a):
    """``linalg.cholesky`` as CuPy's: a matrix that is not positive definite raises
    nothing (CuPy checks ``potrf``'s info only under ``cupyx.errstate(linalg="raise")``)
    and gets what ``potrf`` left, factored up to the failing pivot (finite, wrong: the
    caller must catch it), lower triangle; NumPy raises."""
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        import scipy.linalg

        matrices = a.reshape(-1, *a.shape[-2:])
        (potrf,) = scipy.linalg.get_lapack_funcs(("potrf",), (matrices,))
        out = np.stack([np.tril(potrf(m, lower=True, clean=False)[0]) for m in matrices])
        return out.reshape(a.shape)


def _asnumpy(a, stream=None):
    return a.get() if isinstance(a, DeviceArray) else np.asarray(a)


class _DeviceGenerator:
    """``cupy.random.Generator``: only the draws CuPy has, onto the device."""

    def __init__(self, seed=None):
        self._rng = np.random.default_rng(seed)

    def __getattr__(self, name: str):
        if name not in CUPY_GENERATOR:
            raise AttributeError(f"cupy.random.Generator has no {name!r}")
        return _on_device_function(getattr(self._rng, name), f"Generator.{name}")


def _on_device(xp):
    """``xp`` (a CuPy-shaped NumPy), changed in place to have :class:`DeviceArray` arrays
    (in place: its functions keep counting into ``xp.full_row_sorts``)."""
    for name, value in list(vars(xp).items()):
        if name in NOT_IN_CUPY:
            delattr(xp, name)
        elif callable(value) and not isinstance(value, type):  # functions and ufuncs
            setattr(xp, name, _on_device_function(value, f"xp.{name}",
                                                  name in SIZED_BY_VALUES))
    xp.linalg = types.SimpleNamespace(**{
        name: _on_device_function(getattr(np.linalg, name), f"xp.linalg.{name}")
        for name in dir(np.linalg)
        if not name.startswith("_") and name not in NOT_IN_CUPY_LINALG
        and callable(getattr(np.linalg, name))
        and not isinstance(getattr(np.linalg, name), type)})
    for name in ("solve", "inv"):
        setattr(xp.linalg, name, _on_device_function(_nan_where_singular(
            getattr(np.linalg, name)), f"xp.linalg.{name}"))
    xp.linalg.cholesky = _on_device_function(_cholesky_as_cupy, "xp.linalg.cholesky")
    xp.random = types.SimpleNamespace(default_rng=_DeviceGenerator)
    xp.asarray, xp.array = _asarray, _array
    xp.ascontiguousarray, xp.asnumpy = _ascontiguousarray, _asnumpy
    xp.ndarray = DeviceArray
    return xp
