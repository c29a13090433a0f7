"""The model's queries and partial fits under random arguments: each call returns, or
raises a ValueError or TypeError in the library's words; never another exception, nor
one that reads as Python's own (an index out of bounds, a NoneType, a broadcast).

A seeded sweep over 16 methods of a fitted model, by row and by id, on every backend
(the GPU's on a device: its queries on CuPy arrays given host inputs); each argument is
drawn mostly from values of its kind (rows in and out of range, rows of a matrix, id
lists, DataFrames), else from a pool of wrong ones (None, NaN, text, dicts, huge numbers,
matrices of the wrong shape). One-off runs of 10,500 calls at three seeds found nothing
(docs/testing.md, stop 67); this keeps them so.
"""

import inspect
import random
import re
import warnings

import numpy as np
import scipy.sparse as sp

from gpu_als import ALS

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
#: Words of Python's and NumPy's own errors, which no message of the library should hold.
INTERNALS = re.compile(r"'NoneType' object|not subscriptable|unsupported operand|object has "
                       r"no attribute|unhashable|is out of bounds|cannot unpack|referenced "
                       r"before|not callable|object is not iterable|invalid literal|could "
                       r"not convert|only integer scalar|truth value|too many indices|"
                       r"setting an array element|could not be broadcast|Cannot cast|ufunc")


def test_random_arguments_return_or_raise_in_the_librarys_words(backend):
    try:
        import pandas as pd
    except ImportError:  # (as on the GPU machine: the sweep goes on without DataFrames)
        pd = None
    R = random_interactions(30, 20, 0.2, seed=1)
    coo = R.tocoo()
    df = None if pd is None else pd.DataFrame(
        {"user": [f"u{i}" for i in coo.row], "item": coo.col, "value": coo.data})
    fitted = [ALS(factors=3, iterations=2, backend=backend, show_progress=False,
                  random_state=0).fit(data) for data in (R, df) if data is not None]
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
    rnd = random.Random(67)
    failures, returned = [], 0
    for _ in range(2000):  # (about 3 s)
        source = rnd.choice(fitted)
        model = ALS.from_factors(source.user_factors_.copy(), source.item_factors_.copy(),
                                 user_ids=source.user_ids_, item_ids=source.item_ids_,
                                 backend=backend)
        name = rnd.choice(methods)
        parameters = inspect.signature(getattr(model, name)).parameters
        required = [p for p in ARGUMENTS[name] if parameters[p].default is parameters[p].empty]
        optional = [p for p in ARGUMENTS[name] if p not in required]
        chosen = required + rnd.sample(optional, rnd.randint(0, len(optional)))
        kwargs = {p: rnd.choice(kinds[p] if rnd.random() < 0.85 else wrong) for p in chosen}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                getattr(model, name)(**kwargs)
            returned += 1
        except (ValueError, TypeError) as exc:
            if INTERNALS.search(str(exc)):
                failures.append((name, kwargs, f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # noqa: BLE001 - what the sweep looks for
            failures.append((name, kwargs, f"{type(exc).__name__}: {exc}"))
    assert not failures, "\n".join(repr(f)[:600] for f in failures[:10])
    assert 400 < returned < 1600  # (both the calls that return and those refused)
