"""The library under random arguments: each call returns, or raises a ValueError or
TypeError in the library's words; never another exception, nor one that reads as
Python's, NumPy's or SciPy's own (an index out of bounds, a NoneType, a broadcast), nor
one of several lines (a DataFrame's repr).

Seeded sweeps, each argument drawn mostly from values of its kind, else from a pool of
wrong ones (None, NaN, text, dicts, huge numbers, matrices of the wrong shape):

* 16 methods of a fitted model, by row and by id, on every backend (the GPU's on a
  device: its queries on CuPy arrays given host inputs). One-off runs of 10,500 calls at
  three seeds found nothing (docs/testing.md, stop 67); the line rule of stop 68 found
  matrices' reprs in two messages. The same calls again, each of a CPU and a GPU model
  of the same factors, must give the same answers, warnings or errors;
* the functions of gpu_als.evaluation, of ALS models on every backend and of the
  baselines;
* DataFrames of columns of random kinds, fitted, folded in and split;
* fit's arguments, on every backend.
"""

import inspect
import random
import re
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS, from_dataframe
from gpu_als import evaluation as ev

from .conftest import random_interactions

#: The arguments swept, by method.
ARGUMENTS = {
    "recommend": ["userid", "user_items", "N", "filter_already_liked_items", "filter_items",
                  "recalculate_user", "items"],
    "similar_items": ["itemid", "N", "recalculate_item", "item_users", "filter_items",
                      "items"],
    "similar_users": ["userid", "N", "filter_users", "users"],
    "predict": ["userids", "itemids"],
    "recalculate_user": ["userid", "user_items"],
    "recalculate_item": ["itemid", "item_users"],
    "explain": ["userid", "user_items", "itemid", "N"],
    "transform": ["user_items"],
    "partial_fit_users": ["userids", "user_items"],
    "partial_fit_items": ["itemids", "item_users"],
    "user_rows": ["ids"],
    "item_rows": ["ids"],
    "recommend_frame": ["users", "interactions", "N"],
    "predict_frame": ["pairs"],
    "similar_items_frame": ["items", "N"],
    "recommend_users_frame": ["items", "interactions", "N"],
}
#: Words of Python's, NumPy's and SciPy's own errors, which no message of the library
#: should hold.
INTERNALS = re.compile(r"'NoneType' object|not subscriptable|unsupported operand|object has "
                       r"no attribute|unhashable|is out of bounds|cannot unpack|referenced "
                       r"before|not callable|object is not iterable|invalid literal|could "
                       r"not convert|only integer scalar|truth value|too many indices|"
                       r"setting an array element|could not be broadcast|Cannot cast|ufunc|"
                       r"inhomogeneous|coordinates and data arrays|must not contain infs or "
                       r"NaNs|Singular matrix|is not positive definite|zero-size array")


def _query_inputs():
    """The model queries' sweep: a matrix of interactions, the same as a DataFrame of ids
    (None without pandas, as on the GPU machine: the sweeps go on without DataFrames), the
    kinds of each argument, the wrong values and the methods swept."""
    try:
        import pandas as pd
    except ImportError:
        pd = None
    R = random_interactions(30, 20, 0.2, seed=1)
    coo = R.tocoo()
    df = None if pd is None else pd.DataFrame(
        {"user": [f"u{i}" for i in coo.row], "item": coo.col, "value": coo.data})
    by_item = R.T.tocsr()
    wrong = [0, 1, -1, 30, 100, 2.5, np.nan, None, "u1", "zz", [0, 1], [], np.array([[1]]),
             R[:2], R, sp.csr_matrix((2, 5)), True, "", {"a": 1}, 10**12,
             *([] if df is None else [df.head(3)])]
    kinds = {
        "userid": [0, 29, [0, 1, 2], np.array([3, 4]), np.int64(7), 30, -1, [0, 0]],
        "userids": [0, [0, 1], np.array([2, 3]), [0, 0], [29, 30], -1],
        "itemid": [0, 19, [0, 1], np.array([5]), 20, -1, [3, 3]],
        "itemids": [0, [0, 1], np.array([2, 19]), [1, 1], 20],
        "user_items": [R[0], R[[0, 1, 2]], R[5], sp.csr_matrix((1, 20)), R[0].toarray(), R,
                       sp.csr_array(R[:2]), R[:2].tocoo(), R[0] * -1, R[0] * np.nan],
        "item_users": [by_item[0], by_item[[0, 1]], sp.csr_matrix((1, 30)), by_item],
        "N": [1, 5, 20, 100, 0, -1],
        "filter_items": [[0, 1], np.array([5]), [], [20], None],
        "items": [[0, 1, 2], np.array([3, 4]), [], [0, 0], None, ["u1"], list(range(20))],
        "filter_users": [[0], [], None, [29]],
        "users": [["u1", "u2"], [0, 1], [], None, ["zz"], "u1"],
        "filter_already_liked_items": [True, False],
        "recalculate_user": [True, False],
        "recalculate_item": [True, False],
        "ids": [["u1", "u2"], ["zz"], [0, 1], "u1", 0, [], np.array(["u1"])],
    }
    if df is not None:
        kinds.update(interactions=[df, df.head(5), df.iloc[:0], None, df.assign(user="new")],
                     pairs=[df[["user", "item"]], df.head(0), df.assign(item=99)])
    methods = sorted(name for name in ARGUMENTS if df is not None or "_frame" not in name)
    return R, df, kinds, wrong, methods


def _required(name: str) -> list[str]:
    """The arguments of ALS method ``name`` that the sweep must give."""
    parameters = inspect.signature(getattr(ALS, name)).parameters
    return [p for p in ARGUMENTS[name] if parameters[p].default is parameters[p].empty]


def test_random_arguments_return_or_raise_in_the_librarys_words(backend):
    R, df, kinds, wrong, methods = _query_inputs()
    fitted = [ALS(factors=3, iterations=2, backend=backend, show_progress=False,
                  random_state=0).fit(data) for data in (R, df) if data is not None]

    def call(rnd):
        source = rnd.choice(fitted)
        model = ALS.from_factors(source.user_factors_.copy(), source.item_factors_.copy(),
                                 user_ids=source.user_ids_, item_ids=source.item_ids_,
                                 backend=backend)
        name = rnd.choice(methods)
        return name, getattr(model, name), _required(name), ARGUMENTS[name]

    returned = _sweep(call, kinds, wrong, seed=67, n_calls=2000)  # (about 3 s)
    assert 400 < returned < 1600  # (both the calls that return and those refused)


def test_the_cpu_and_gpu_backends_answer_random_queries_alike(gpu_backend):
    """The queries of the sweep above, each asked of a CPU model and of a GPU one that hold
    the same float64 factors and solver (exact or NNLS): the same answer (to 1e-7; a model
    for the partial fits,
    compared by its factors and ids), the same warnings, or the same error in the same
    words. One-off runs of 4,600 calls found nothing (stop 69); fold-ins against a
    singular Y^T Y, which the GPU named in other words, have a test of their own
    (test_validation)."""
    R, df, kinds, wrong, methods = _query_inputs()
    sources = [ALS(factors=3, iterations=2, backend="cpu", dtype=np.float64,
                   show_progress=False, random_state=0).fit(data)
               for data in (R, df) if data is not None]
    rnd = random.Random(69)
    differ = []
    for _ in range(600):  # (about 2 s)
        source, name = rnd.choice(sources), rnd.choice(methods)
        solver = rnd.choice(["cholesky", "nnls"])  # (the fold-ins solve either problem)
        kwargs = _drawn(rnd, _required(name), ARGUMENTS[name], kinds, wrong)
        answers = []
        for backend in ("cpu", gpu_backend):
            model = ALS.from_factors(source.user_factors_, source.item_factors_,
                                     user_ids=source.user_ids_, item_ids=source.item_ids_,
                                     backend=backend, dtype=np.float64, solver=solver)
            answers.append(_answer(getattr(model, name), kwargs))
        if not _alike(*answers):
            differ.append((name, kwargs, answers))
    assert not differ, "\n".join(repr(d)[:600] for d in differ[:5])


def _answer(function, kwargs: dict) -> tuple:
    """What ``function(**kwargs)`` gives: its result on the host and its warnings' words,
    or the type and words of its error."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = function(**kwargs)
    except Exception as exc:  # noqa: BLE001 - compared, not judged, here
        return type(exc).__name__, str(exc)
    return _on_host(result), sorted(str(w.message) for w in caught)


def _on_host(value):
    """``value`` with its arrays as NumPy's (a model: its factors and ids)."""
    if isinstance(value, ALS):
        value = (value.user_factors_, value.item_factors_, value.user_ids_, value.item_ids_)
    if isinstance(value, (tuple, list)):
        return tuple(_on_host(v) for v in value)
    if hasattr(value, "columns"):  # a DataFrame
        value = {column: value[column].to_numpy() for column in value.columns}
    if isinstance(value, dict):
        return {key: _on_host(v) for key, v in value.items()}
    if hasattr(value, "get"):  # a CuPy array
        value = value.get()
    return np.asarray(value) if value is not None else None


def _alike(a, b) -> bool:
    """The same answer: the same structure and types, floats to 1e-7, the rest exactly."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(_alike(a[key], b[key]) for key in a)
    if isinstance(a, tuple):
        return len(a) == len(b) and all(_alike(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind == "f":
            return np.allclose(a, b, rtol=1e-7, atol=1e-9, equal_nan=True)
        return bool((a == b).all())
    return a == b


def _sweep(call, kinds: dict, wrong: list, *, seed: int, n_calls: int,
           errors: tuple = (ValueError, TypeError)) -> int:
    """``n_calls`` seeded calls: ``call(rnd)`` gives a name, a function, its required
    arguments and all those swept; each argument is drawn from ``kinds`` of its name, or
    (15 %) from ``wrong``. Fails, naming the calls, where one raises anything but one of
    ``errors`` in the library's words (one line, none of Python's); returns how many
    returned."""
    rnd = random.Random(seed)
    failures, returned = [], 0
    for _ in range(n_calls):
        name, function, required, swept = call(rnd)
        kwargs = _drawn(rnd, required, swept, kinds, wrong)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                function(**kwargs)
            returned += 1
        except errors as exc:
            if INTERNALS.search(str(exc)) or "\n" in str(exc):
                failures.append((name, kwargs, f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # noqa: BLE001 - what the sweep looks for
            failures.append((name, kwargs, f"{type(exc).__name__}: {exc}"))
    assert not failures, "\n".join(repr(f)[:600] for f in failures[:10])
    return returned


def _drawn(rnd: random.Random, required: list[str], swept: list[str], kinds: dict,
           wrong: list) -> dict:
    """The ``required`` arguments and a random share of the rest of ``swept``, each drawn
    from ``kinds`` of its name, or (15 %) from ``wrong``."""
    optional = [p for p in swept if p not in required]
    chosen = required + rnd.sample(optional, rnd.randint(0, len(optional)))
    return {p: rnd.choice(kinds[p] if rnd.random() < 0.85 else wrong) for p in chosen}


def test_evaluation_under_random_arguments_returns_or_raises_in_the_librarys_words(backend):
    """As above, over the functions of gpu_als.evaluation: splits, metrics of ALS models
    (on ``backend``) and of the baselines, EarlyStopping in a fit. A one-off run of 3,000
    calls found NumPy's words from personalization, scorable_part and metric=array(...)
    (docs/testing.md, stop 68)."""
    try:
        import pandas as pd
    except ImportError:
        pd = None
    R = random_interactions(30, 20, 0.2, seed=1)
    train, test = ev.train_test_split(R, random_state=0)
    models = [ALS(factors=3, iterations=2, feedback=feedback, backend=backend,
                  show_progress=False, random_state=0).fit(train)
              for feedback in ("implicit", "explicit")]
    models += [ev.PopularityRecommender().fit(train), ev.RandomRecommender(0).fit(train),
               ALS(factors=3)]
    tables = [R, train, test, R.T.tocsr(), R[:10], R * -1, R * np.nan, sp.csr_matrix(R.shape),
              R.tocoo(), sp.csr_array(R), R.toarray()]
    if pd is not None:
        coo = R.tocoo()
        df = pd.DataFrame({"user": [f"u{i}" for i in coo.row], "item": coo.col,
                           "value": coo.data, "timestamp": np.arange(coo.nnz) * 10})
        df_train, df_test = ev.train_test_split(df, random_state=0)
        models.append(ALS(factors=3, iterations=2, backend=backend, show_progress=False,
                          random_state=0).fit(df_train))
        tables += [df, df_train, df_test, df.drop(columns="value"), df.head(1),
                   df.rename(columns={"user": "u"})]
    wrong = [0, 1, -1, 2.5, np.nan, np.inf, None, "u1", "", [0, 1], [], np.array([[1]]),
             R[:2], True, {"a": 1}, 10**12, object(), np.arange(50.0)]
    kinds = {
        "model": models, "train": tables, "test": tables, "validation": tables,
        "user_items": tables, "ratings": tables, "df": tables, "held_out": tables,
        "K": [1, 5, 20, 100, [5, 10], (3, 3), 0, -1, 2.0, np.int64(4), []],
        "batch_size": [1, 7, 2048, 0, 3.5],
        "test_fraction": [0.2, 0.5, 0.99, 0, 1, -0.1, np.nan],
        "random_state": [0, None, -1, 1.5, np.random.default_rng(0), np.random.RandomState(0)],
        "threshold": [4, 0, -1, np.nan],
        "time_col": ["timestamp", "value", "user", "nope", 3],
        "user_col": ["user", "item", "u", 1], "item_col": ["item", "user", "x"],
        "cutoff": [None, 50, 0, 10**9, "1998-01-01", np.datetime64("2020-01-01")],
        "n_items": [20, 1, 0, 5],
        "recommended_ids": [np.array([[0, 1], [1, 2]]), np.array([[0, -1]]),
                            np.zeros((0, 3), int), [[1, 2], [3]], np.array([[0.5]]),
                            np.array([1, 2]), np.array([[25]])],
        "metric": ["recall", "ndcg", "rmse", "auc", None, np.array(["map", "rmse"])],
        "show_progress": [False], "patience": [1, 0], "min_delta": [0.0, -1, np.nan],
        "restore_best": [True, False],
    }

    def early_stopping(model, train, validation, **options):  # and a fit that it watches
        stop = ev.EarlyStopping(model, train, validation, **options)
        model.set_params(iterations=2).fit(train if train is not None else R, callback=stop)

    splits = ["random_state", "user_col", "item_col"]
    functions = {
        "binarize": (ev.binarize, ["ratings"], ["threshold"]),
        "train_test_split": (ev.train_test_split, ["user_items"], ["test_fraction", *splits]),
        "leave_k_out_split": (ev.leave_k_out_split, ["user_items"], ["K", *splits]),
        "temporal_split": (ev.temporal_split, ["df"],
                           ["time_col", "test_fraction", "K", "cutoff", "user_col"]),
        "ranking_metrics": (ev.ranking_metrics, ["model", "train", "test"],
                            ["K", "batch_size", "show_progress"]),
        "ndcg_at_k": (ev.ndcg_at_k, ["model", "train", "test"], ["K", "show_progress"]),
        "auc": (ev.auc, ["model", "train", "test"], ["batch_size", "show_progress"]),
        "rmse": (ev.rmse, ["model", "test"], []),
        "personalization": (ev.personalization, ["recommended_ids", "n_items"], []),
        "validation_score": (ev.validation_score, ["model", "train", "validation", "metric"],
                             ["K"]),
        "scorable_part": (ev.scorable_part, ["train", "held_out"], []),
        "EarlyStopping": (early_stopping, ["model", "train", "validation"],
                          ["metric", "K", "patience", "min_delta", "restore_best"]),
    }

    def call(rnd):
        name = rnd.choice(sorted(functions))
        function, required, optional = functions[name]
        return name, function, required, required + optional

    returned = _sweep(call, kinds, wrong, seed=68, n_calls=1500)
    assert 100 < returned < 1200


def test_dataframes_of_random_columns_train_or_are_refused_in_the_librarys_words():
    """Frames of (user, item, value, timestamp) columns of random kinds (text, numbers,
    NaN, booleans, categories, datetimes with and without a time zone, decimals, bytes,
    lists, tuples, complex numbers, nullable types; some left out), pandas' or polars',
    given to from_dataframe, fit, recommend_frame's fold-in and the splits. Each returns,
    or raises a ValueError, TypeError or (for values too large to fit) FloatingPointError
    in the library's words. One-off runs of 6,000 frames found SciPy's "coordinates and
    data arrays must be 1-D" (a polars Struct of values), which this finds again, and a
    misleading error for values of 9.2e18 (test_model's
    test_a_few_rows_too_large_to_factorize_name_the_size_of_the_input; stop 68)."""
    import decimal

    pd = pytest.importorskip("pandas")
    try:
        import polars as pl
    except ImportError:
        pl = None
    n, absent = 6, object()
    numbers = [np.array([0, 1, 1, 2, 0, 1]), np.arange(n) + 0.5, -np.arange(n),
               np.full(n, 2**63 + 2, np.uint64), pd.array([1, 2, None] * 2, dtype="Int64"),
               np.array([1.0, np.nan, 2.0, 1.0, 3.0, 1.0])]
    odd = [pd.Series([[1], [2]] * 3, dtype=object), pd.Series([(1, 2), (1, 3)] * 3,
                                                                dtype=object),
           pd.Series([decimal.Decimal(i % 3) for i in range(n)], dtype=object),
           pd.arrays.IntervalArray.from_breaks(np.arange(n + 1)), np.full(n, 1 + 1j),
           pd.to_timedelta(np.arange(n), unit="s"), absent]
    texts = [["a", "b", "a", "c", "b", "a"], ["one"] * n, pd.Categorical(list("xyxzyx")),
             [b"A", b"B"] * 3, pd.array(["a", None, "b"] * 2, dtype="string"),
             pd.Series([1, "a", 2.5, 1, "a", 2.5], dtype=object), ["", "a", "b"] * 2]
    times = [pd.to_datetime(np.arange(n) * 10**9),
             pd.to_datetime(np.arange(n) * 10**9).tz_localize("UTC")]
    kinds = {"user": texts + numbers[:4] + odd, "item": texts + numbers[:4] + odd,
             "value": numbers + [np.array([True, False] * 3), np.array([1e39, 3.0] * 3),
                                 np.array([1.0, np.inf] * 3), texts[0], *odd],
             "timestamp": times + numbers[:2] + [texts[0], *odd]}
    kinds["polars"] = [False, False, True] if pl is not None else [False]
    base = ALS(factors=2, iterations=1, backend="cpu", show_progress=False).fit(
        pd.DataFrame({"user": ["a", "b", "a"], "item": [1, 2, 3]}))

    def frame(polars=False, **named):
        df = pd.DataFrame({name: column for name, column in named.items()
                           if column is not absent})
        if polars:
            try:
                return pl.from_pandas(df)
            except Exception:  # noqa: BLE001 - a column polars has no type for: as pandas'
                return df
        return df

    def fit(feedback):
        return lambda **named: ALS(factors=2, iterations=1, feedback=feedback, backend="cpu",
                                   show_progress=False).fit(frame(**named))

    functions = {
        "from_dataframe": lambda **named: from_dataframe(frame(**named)),
        "fit": fit("implicit"), "fit explicit": fit("explicit"),
        "recommend_frame": lambda **named: base.recommend_frame(interactions=frame(**named)),
        "train_test_split": lambda **named: ev.train_test_split(frame(**named)),
        "temporal_split": lambda **named: ev.temporal_split(frame(**named)),
    }

    def call(rnd):
        name = rnd.choice(sorted(functions))
        return name, functions[name], ["user", "item", "value", "timestamp", "polars"], []

    returned = _sweep(call, kinds, [absent], seed=68, n_calls=1000,
                      errors=(ValueError, TypeError, FloatingPointError))
    assert 100 < returned < 600


def test_fit_under_random_arguments_trains_or_is_refused_in_the_librarys_words(backend):
    """fit's arguments drawn at random (matrices of every format, dtype and shape, empty
    or negative; DataFrames; id lists of other lengths, repeated or missing; callbacks
    that stop or cannot be called), on models of random settings, some fitted already:
    each fit trains finite factors with one id per row, or is refused in the library's
    words. One-off runs of 3,850 found a singular system named otherwise on a GPU than on
    the CPU, and an empty matrix called singular (stop 68; each has a test of its own in
    test_model and test_validation)."""
    try:
        import pandas as pd
    except ImportError:
        pd = None
    from gpu_als.backends import get_backend

    R = random_interactions(12, 8, 0.3, seed=1)
    matrices = [R, R.tocoo(), R.tocsc(), sp.csr_array(R), R.astype(np.float64),
                R.astype(np.int32), R * -1, R[:0], sp.csr_matrix((12, 8)), R.T.tocsr(),
                R.astype(bool), R[:, :1], R[:1]]
    if pd is not None:
        coo = R.tocoo()
        df = pd.DataFrame({"user": [f"u{i}" for i in coo.row], "item": coo.col,
                           "value": coo.data})
        matrices += [df, df.head(1), df.drop(columns="value")]
    kinds = {
        "user_items": matrices,
        "user_ids": [None, [f"u{i}" for i in range(12)], np.arange(12), list(range(11)),
                     ["a"] * 12, [None] * 12, np.arange(12).reshape(12, 1)],
        "item_ids": [None, list("abcdefgh"), np.arange(8), list("abc"), [1, 1, *range(2, 8)]],
        "callback": [None, lambda *_: None, lambda *_: True, lambda: None, 3],
        "params": [{}, {"warm_start": True}, {"iterations": 0}, {"factors": 20},
                   {"feedback": "explicit"}, {"solver": "cg", "cg_steps": 1},
                   {"dtype": np.float64}, {"calculate_training_loss": False},
                   {"confidence": "log", "epsilon": 0.01}, {"regularization": 0.0},
                   {"solver": "nnls"}],
        "fitted": [False, True],
    }
    to_numpy = get_backend(backend).to_numpy if isinstance(backend, str) else backend.to_numpy

    def fit(user_items, params=None, fitted=False, **arguments):
        params = params if isinstance(params, dict) else {}  # (a wrong draw: the fit's own)
        model = ALS(**{"factors": 3, "iterations": 2, "backend": backend,
                       "show_progress": False, "random_state": 0, **params})
        if fitted is True:
            model.fit(R)
        model.fit(user_items, **arguments)
        factors = to_numpy(model.user_factors_)
        assert np.isfinite(factors).all() and np.isfinite(to_numpy(model.item_factors_)).all()
        assert model.user_ids_ is None or len(model.user_ids_) == len(factors)

    def call(rnd):
        return "fit", fit, ["user_items"], ["user_items", "user_ids", "item_ids", "callback",
                                            "params", "fitted"]

    wrong = [None, 0, "x", [1, 2], np.nan, {"a": 1}, R.toarray(), -1, True]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (factors=20 of 8 items, no positive value, ...)
        returned = _sweep(call, kinds, wrong, seed=68, n_calls=200)
    assert 30 < returned < 150
