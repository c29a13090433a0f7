"""Bad input gets a clear error that names the problem; never a crash or a silent NaN."""

import contextlib
import re
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from gpu_als import ALS, BackendUnavailableError, NotFittedError, from_dataframe
from gpu_als.backends import gpu
from gpu_als.tune import tune

from .conftest import cudf_stand_in, emulated_backend, random_interactions


def fit(R, **params):
    """A small fit, seeded: the same start on every run, as a failure needs to be replayed."""
    return ALS(**{"factors": 4, "iterations": 2, "backend": "cpu", "show_progress": False,
                  "random_state": 0, **params}).fit(R)


@pytest.fixture
def R():
    return random_interactions(20, 15, 0.2, seed=0)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_values(R, value):
    R = R.copy()
    R.data[3] = value
    row = int(np.searchsorted(R.indptr, 3, side="right")) - 1
    with pytest.raises(ValueError, match=rf"1 NaN or infinite value\(s\), the first at row "
                                         rf"{row}, column {R.indices[3]}$"):
        fit(R)


@pytest.mark.parametrize("fmt", ["csr", "coo", "lil"])
def test_finite_values_beyond_the_dtypes_range_are_named_as_such(R, fmt):
    """A float64 value that float32 cannot hold becomes inf in the cast: the error says
    that, not that the user's (finite) data holds infinities, and no RuntimeWarning of
    NumPy's cast leaks out first (pytest.ini turns one into an error here)."""
    R = R.astype(np.float64)
    R.data[3] = 1e39
    row = int(np.searchsorted(R.indptr, 3, side="right")) - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=rf"1 value\(s\) beyond float32's range \(largest "
                                             rf"magnitude 3.4e\+38\), the first at row {row}, "
                                             rf"column {R.indices[3]}: scale the values down "
                                             rf"or use dtype=float64$"):
            fit(R.asformat(fmt))
        fit(R.asformat(fmt), dtype="float64", alpha=1e-38)  # fine there
    # duplicates whose sum overflows, in float64 too
    twice = sp.coo_matrix(([1e308, 1e308, 1.0], ([0, 0, 1], [1, 1, 0])), shape=(2, 2))
    with pytest.raises(ValueError, match=r"1 value\(s\) beyond float64's range .* scale the "
                                         r"values down$"):
        fit(twice, dtype="float64", factors=1)


def test_a_frames_value_beyond_float32_is_named_by_its_row():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user": [1, 2, 3, 1], "item": ["a", "b", "a", "c"],
                       "value": [1.0, 2.0, -1e39, 3.0]})
    with pytest.raises(ValueError, match=r"column 'value' holds 1 value\(s\) beyond float32's "
                                         r"range .*, the first at row 2: scale the values "
                                         r"down or use dtype=float64$"):
        fit(df)
    assert from_dataframe(df, dtype=np.float64).matrix[2, 0] == -1e39
    largest = float(np.finfo(np.float32).max)  # the range's end itself is in it
    df["value"] = [1.0, 2.0, -largest, 3.0]
    assert from_dataframe(df).matrix[2, 0] == -largest


def test_a_frames_row_is_named_with_its_index_label_where_that_is_not_its_position():
    """A missing value, id or time names its row counted from 0 (df.iloc), and where the
    frame's index is not 0, 1, 2, ... (filtered, or indexed by something else) its label
    too (df.loc): a filtered frame's "row 0" was its index 1."""
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"user": [1, 2, 3, 4], "item": [1, 2, 1, 2],
                       "value": [1.0, 2.0, np.nan, 3.0]})
    for frame, says in ((df, "row 2$"), (df[df.user > 1], r"row 1 \(index 2\)$"),
                        (df.set_index(pd.Index(["a", "b", "c", "d"])), r"row 2 \(index 'c'\)$"),
                        (df.iloc[::-1], r"row 1 \(index 2\)$")):
        with pytest.raises(ValueError, match="holds 1 missing, NaN or infinite value.*, the "
                                             "first at " + says):
            fit(frame)
    with pytest.raises(ValueError, match=r"column 'user' has 1 missing ids \(NaN or None\), "
                                         r"the first at row 0 \(index 7\)$"):
        fit(pd.DataFrame({"user": [None, 1.0], "item": [1, 2]}, index=[7, 8]))


def test_dense_input_is_a_type_error(R):
    with pytest.raises(TypeError, match="scipy.sparse matrix or array, got numpy.ndarray; "
                                        "convert a dense array"):
        fit(R.toarray())

    class ArrayLike:  # a torch or JAX array, say: not NumPy's, but NumPy reads it
        __module__ = "torch"

        def __array__(self, dtype=None, copy=None):
            return R.toarray()

    with pytest.raises(TypeError, match=r"got torch.ArrayLike; convert a dense array with "
                                        r"scipy.sparse.csr_matrix\(array\)"):
        fit(ArrayLike())


def test_a_series_of_pairs_is_refused_with_the_frame_to_make(R):
    """``df.groupby(["user_id", "item_id"]).size()``, a Series: the message's expression
    makes the DataFrame that fits (it said "convert a dense array" before)."""
    pd = pytest.importorskip("pandas")
    coo = R.tocoo()
    counts = pd.DataFrame({"user_id": coo.row, "item_id": coo.col, "n": coo.data}) \
        .groupby(["user_id", "item_id"])["n"].sum()
    with pytest.raises(TypeError, match=r"got pandas.Series; for a Series indexed by \(user, "
                                        r"item\) pairs use its rows: (s.rename_axis.*)$") as e:
        fit(counts)
    make = e.value.args[0].rsplit(": ", 1)[1]
    model = fit(eval(make, {"s": counts}), random_state=0)
    rows = fit(pd.DataFrame({"user": coo.row, "item": coo.col, "value": coo.data}),
               random_state=0)
    np.testing.assert_array_equal(model.user_ids_, rows.user_ids_)
    np.testing.assert_array_equal(model.user_factors_, rows.user_factors_)


class CupySparseStandIn:
    """Shaped like a cupyx.scipy.sparse matrix where it matters here: its module's name,
    and ``get()`` giving the SciPy matrix (tests/test_gpu.py uses the real one)."""

    __module__ = "cupyx.scipy.sparse._csr"

    def __init__(self, matrix):
        self.matrix = matrix

    def get(self):
        return self.matrix.copy()


def test_a_cupy_sparse_matrix_is_taken_through_the_host(R):
    model = fit(CupySparseStandIn(R), random_state=0)
    np.testing.assert_array_equal(model.user_factors_, fit(R, random_state=0).user_factors_)
    ids, _ = model.recommend([0, 1], CupySparseStandIn(R[[0, 1]]))
    np.testing.assert_array_equal(ids, model.recommend([0, 1], R[[0, 1]])[0])
    empty = CupySparseStandIn(sp.csr_matrix((1, R.shape[1])))
    assert model.recommend(0, empty, N=3)[0].shape == (3,)


def test_dataframe_at_query_time_points_to_the_helper(R):
    pd = pytest.importorskip("pandas")
    model = fit(R)
    with pytest.raises(TypeError, match=r"from_dataframe\(df\).*item_ids=model.item_ids_"):
        model.recommend(0, pd.DataFrame({"user": [0], "item": [1], "value": [1.0]}))
    with pytest.raises(ValueError, match=r"fit\(df\) reads the columns 'user', 'item' and "
                                         r"optionally 'value'; this DataFrame has \['customer', "
                                         r"'item'\]. .*from_dataframe\(df, user_col"):
        fit(pd.DataFrame({"customer": [0], "item": [1]}))
    # the columns to rename, guessed from their names (MovieLens' here), else their order
    for columns, renamed in (
            (["timestamp", "movieId", "userId", "rating"],
             "{'userId': 'user', 'movieId': 'item', 'rating': 'value'}"),
            (["day", "a", "b"], "{'a': 'user', 'b': 'item'}"),
            (["customer_id", "sku", "event"], "{'customer_id': 'user', 'sku': 'item'}"),
            (["userId", "movieId", "value", "rating"],  # a 'value' already: kept as it is
             "{'userId': 'user', 'movieId': 'item'}")):
        with pytest.raises(ValueError, match=re.escape(f". Rename them (e.g. fit(df.rename("
                                                       f"columns={renamed}))), or use")):
            fit(pd.DataFrame({name: [1] for name in columns}).assign(event="view"))
    with pytest.raises(ValueError, match=r"\[(nan|None), 'b'\]. Rename them, or use"):
        fit(pd.DataFrame([[1, 2]], columns=[np.nan, "b"]))  # no example: NaN would not run
    with pytest.raises(ValueError, match=r"'user', 'item' and, for feedback='explicit', the "
                                         r"ratings in 'value'; this DataFrame has \['user', "
                                         r"'item', 'rating'\]. Rename them \(e.g. fit\(df."
                                         r"rename\(columns=\{'rating': 'value'\}\)\)\)"):
        fit(pd.DataFrame({"user": [0], "item": [1], "rating": [4.0]}), feedback="explicit")
    indexed = pd.DataFrame({"user": [0, 1], "item": [1, 0]}).set_index("user")
    with pytest.raises(ValueError, match=r"has \['item'\] \('user' is its index: pass "
                                         r"df.reset_index\(\)\)"):
        fit(indexed)
    with pytest.raises(ValueError, match=r"column 'user' not found; the DataFrame has "
                                         r"\['item'\] \('user' is its index"):
        from_dataframe(indexed)


@pytest.mark.parametrize("library", ["pandas", "polars", "pyarrow"])
def test_the_rename_that_fit_df_suggests_fits(library):
    """The example of fit(df)'s error for columns of other names runs as it is written,
    in the frame's own library (polars' rename takes the mapping itself)."""
    frames = pytest.importorskip(library)
    pytest.importorskip("pandas")
    columns = {"userId": [1, 2, 1], "movieId": [10, 20, 20], "rating": [4.0, 5.0, 3.0]}
    df = frames.table(columns) if library == "pyarrow" else frames.DataFrame(columns)
    with pytest.raises(ValueError, match=r"\(e.g. fit\(df") as error:
        fit(df)
    suggested = re.search(r"\(e.g. (fit\(.*\))\), or use", str(error.value)).group(1)
    model = eval(suggested, {"fit": lambda frame: fit(frame, factors=2), "df": df})
    assert list(model.user_ids_) == [1, 2] and list(model.item_ids_) == [10, 20]
    assert model.user_factors_.shape == (2, 2)


@pytest.mark.parametrize("library", ["pandas", "polars"])
def test_missing_id_columns_name_the_columns_meant(library):
    """from_dataframe and the splits name the columns that look meant: alike in name
    (another case, a typo, '_id'), else named as users, items or times are."""
    frames = pytest.importorskip(library)
    from gpu_als.evaluation import temporal_split, train_test_split

    movielens = frames.DataFrame({"userId": [1, 2], "movieId": [3, 4], "rating": [4.0, 5.0],
                                  "ts": [10, 20]})
    says = (r"columns 'user' and 'item' not found; the DataFrame has \['userId', 'movieId', "
            r"'rating', 'ts'\] \(did you mean user_col='userId', item_col='movieId'\?\)$")
    for call in (from_dataframe, train_test_split):
        with pytest.raises(ValueError, match=says):
            call(movielens)
    with pytest.raises(ValueError, match=r"^column 'userid' not found; .* \(did you mean "
                                         r"user_col='userId'\?\)$"):
        from_dataframe(movielens, user_col="userid", item_col="movieId")  # a case apart
    with pytest.raises(ValueError, match=r"column 'timestamp' not found; .* \(did you mean "
                                         r"time_col='ts'\?\): name the column of the times"):
        temporal_split(movielens, user_col="userId")
    shop = frames.DataFrame({"customer_no": [1, 2], "sku": [3, 4], "item": [5, 6]})
    with pytest.raises(ValueError, match=r"\(did you mean user_col='customer_no'\?\)$"):
        from_dataframe(shop)  # 'item' is there
    with pytest.raises(ValueError, match=r"\(did you mean item_col='sku'\?\)$"):
        from_dataframe(shop, user_col="customer_no", item_col="skus")  # a typo
    plain = frames.DataFrame({"a": [1, 2], "b": [3, 4]})
    with pytest.raises(ValueError, match=r"the DataFrame has \['a', 'b'\]$"):  # no guess
        from_dataframe(plain)
    things = frames.DataFrame({"uid": [1, 2], "thing": [3, 4]})  # a typo, no item's word
    with pytest.raises(ValueError, match=r"\(did you mean item_col='thing'\?\)$"):
        from_dataframe(things, user_col="uid", item_col="thngs")
    one = frames.DataFrame({"customer_item": [1, 2], "x": [3, 4]})  # not meant twice
    with pytest.raises(ValueError, match=r"\(did you mean user_col='customer_item'\?\)$"):
        from_dataframe(one)
    # no "user_col=" where the method has no such argument, or swaps the two sides
    model = fit(frames.DataFrame({"user": [1, 2, 2], "item": [3, 3, 4]}), factors=2)
    sku = frames.DataFrame({"user": [1], "sku": [3]})
    for call in (model.partial_fit_users, lambda df: model.recommend_users_frame([3], df)):
        with pytest.raises(ValueError, match=r"column 'item' not found; the DataFrame has "
                                             r"\['user', 'sku'\]$"):
            call(sku)


def test_an_empty_frame_and_a_missing_value_column_are_named():
    pd = pytest.importorskip("pandas")
    with pytest.raises(ValueError, match="df has no rows: there is nothing to learn from"):
        fit(pd.DataFrame({"user": [], "item": []}))
    for maps in ({}, {"drop_unknown": True}, {"user_ids": [5], "drop_unknown": True}):
        with pytest.raises(ValueError, match="^df has no rows: there is nothing to learn "
                                             "from$"):
            from_dataframe(pd.DataFrame({"user": [], "item": []}), **maps)
    # against a model's items, rows of none of them (as where every row names an item it
    # lacks), which the queries and the metrics take; one row is a row
    for users, shape in (([5, 6], (2, 1)), (None, (0, 1))):
        none_of_them = from_dataframe(pd.DataFrame({"user": [], "item": []}),
                                      user_ids=users, item_ids=[7], drop_unknown=True).matrix
        assert none_of_them.shape == shape and none_of_them.nnz == 0
    assert from_dataframe(pd.DataFrame({"user": [5], "item": [7]})).matrix.nnz == 1
    with pytest.raises(ValueError, match=r"column 'score' not found; the DataFrame has "
                                         r"\['user', 'item', 'value'\]"):
        from_dataframe(pd.DataFrame({"user": [0], "item": [1], "value": [2.0]}),
                       value_col="score")
    with pytest.raises(ValueError, match="user_col and item_col are both 'user'"):
        from_dataframe(pd.DataFrame({"user": [0, 1], "item": [1, 0]}), "user", "user")
    for ids in ("user", "item"):  # (numbers: they were read as the values, silently)
        with pytest.raises(ValueError, match=f"value_col and {ids}_col are both {ids!r}: "
                                             f"name the column of the values"):
            from_dataframe(pd.DataFrame({"user": [0, 1], "item": [1, 0]}), value_col=ids)
    # several names, as a list or an array, where one is asked for: not "unhashable type"
    for param in ("user_col", "item_col", "value_col"):
        with pytest.raises(TypeError, match=rf"^{param}=\['user', 'item'\] is not a column "
                                            rf"name: give the name of one column$"):
            from_dataframe(pd.DataFrame({"user": [0], "item": [1]}),
                           **{param: ["user", "item"]})


def test_a_lazy_frame_is_refused_with_how_to_evaluate_it():
    pl = pytest.importorskip("polars")
    lazy = pl.DataFrame({"user": [0, 1], "item": [1, 0]}).lazy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nor is its schema resolved on the way
        for call in (fit, from_dataframe):
            with pytest.raises(TypeError, match=r"df is a polars LazyFrame, whose rows are "
                                                r"not there until it is evaluated: pass "
                                                r"df.collect\(\)"):
                call(lazy)


def test_a_dask_frame_is_refused_with_how_to_compute_it():
    """It failed deep in fit with "int() argument must be ... not 'Scalar'" (its shape)."""
    pd = pytest.importorskip("pandas")
    dd = pytest.importorskip("dask.dataframe")
    lazy = dd.from_pandas(pd.DataFrame({"user": [0, 1, 2], "item": [1, 0, 1]}), npartitions=2)
    for call, more in ((fit, r", or fit it on its cluster, whose workers read it: "
                             r"gpu_als.distributed.fit_distributed\(model, df, client\)"),
                       (from_dataframe, ""), (lambda df: tune(df, {"factors": [2]}), "")):
        with pytest.raises(TypeError, match=r"^df is a dask .*DataFrame, whose rows are not "
                                            r"there until it is evaluated: pass "
                                            rf"df.compute\(\){more}$"):
            call(lazy)


def test_tables_of_other_libraries_are_read_through_to_pandas():
    """A pyarrow Table (and, by the same to_pandas(), cuDF's and Modin's DataFrames, which
    are not installed here: a stand-in from a module named cudf) trains as its pandas
    DataFrame."""
    pd = pytest.importorskip("pandas")
    pa = pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"user": ["a", "b", "a", "c"], "item": [1, 2, 2, 1],
                          "value": [1.0, 2.0, 3.0, 1.0]})
    expected = ALS(factors=2, iterations=2, backend="cpu", random_state=0).fit(frame)

    for table in (pa.Table.from_pandas(frame), cudf_stand_in(frame)):
        model = ALS(factors=2, iterations=2, backend="cpu", random_state=0).fit(table)
        np.testing.assert_array_equal(model.user_ids_, expected.user_ids_)
        np.testing.assert_array_equal(model.user_factors_, expected.user_factors_)
        got = from_dataframe(table)
        assert (got.matrix != from_dataframe(frame).matrix).nnz == 0


def test_non_2d_input():
    try:
        coo = sp.coo_array(([1.0, 2.0], ([0, 3],)), shape=(5,))
    except TypeError:
        pytest.skip("this SciPy has no 1-D sparse arrays (SciPy >= 1.13 has)")
    with pytest.raises(ValueError, match="must be 2-D"):
        fit(coo)


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_non_real_dtype(dtype):
    with pytest.raises(TypeError, match=r"has dtype complex\d+: expected real numbers"):
        fit(sp.csr_matrix(np.eye(3, dtype=dtype)))


def test_bool_and_int_inputs_are_fine():
    """Taken as the floats they stand for: the same model as from those."""
    R = sp.random(30, 20, density=0.2, format="csr", random_state=1)
    counts = (R * 5).astype(np.int64)
    for given, meant in ((R.astype(bool), R.astype(bool).astype(np.float32)),
                         (counts, counts.astype(np.float32))):
        got, want = fit(given, random_state=0), fit(meant, random_state=0)
        np.testing.assert_array_equal(got.user_factors_, want.user_factors_)
        np.testing.assert_array_equal(got.item_factors_, want.item_factors_)
    assert counts.data.max() > 1  # the counts are not all ones


@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
@pytest.mark.parametrize("regularization", [0.01, 0.0])
def test_empty_shape(shape, regularization):
    """(With regularization 0 it said "Y^T Y ... is singular; use regularization > 0 or
    factors <= 0", of 0 users.)"""
    with pytest.raises(ValueError, match=rf"^user_items is empty: shape {re.escape(str(shape))}$"):
        fit(sp.csr_matrix(shape), regularization=regularization)
    if regularization == 0:  # one row on a side: refused before any work, as singular
        one = sp.csr_matrix(np.ones((1, 5)) if shape[0] == 0 else np.ones((5, 1)))
        side = "user" if shape[0] == 0 else "item"  # ("1 users" before)
        with pytest.raises(ValueError, match=rf"^regularization=0 with factors=4 and 1 "
                                             rf"{side}: Y\^T Y"):
            fit(one, regularization=regularization)
        with pytest.raises(ValueError, match=rf"and 2 {side}s: Y\^T Y"):
            fit(sp.csr_matrix(np.ones((2, 5)) if shape[0] == 0 else np.ones((5, 2))),
                regularization=regularization)


def test_no_stored_entries():
    with pytest.raises(ValueError, match="no stored entries"):
        fit(sp.csr_matrix((4, 4)))


def test_indices_out_of_range():
    R = sp.csr_matrix((np.ones(2), np.array([0, 7]), np.array([0, 1, 2])), shape=(2, 3))
    with pytest.raises(ValueError, match="not a valid sparse matrix"):
        fit(R)


def test_an_integer_option_takes_int64s_whole_range_and_no_more():
    """(Counts go to NumPy as int64: 2**63 would wrap round to a negative one.)"""
    from gpu_als.data import check_int

    largest = int(np.iinfo(np.int64).max)
    assert check_int("n", largest, minimum=0) == largest
    assert check_int("n", np.int64(largest), minimum=0) == largest
    with pytest.raises(ValueError, match=r"^n=9223372036854775808: too large \(at most "
                                         r"2\*\*63 - 1\)$"):
        check_int("n", largest + 1, minimum=0)

@pytest.mark.parametrize("params, error, message", [
    ({"factors": 0}, ValueError, r"factors=0: must be >= 1"),
    ({"factors": 2.5}, TypeError, r"factors must be an integer, got float 2.5"),
    ({"factors": True}, TypeError, r"factors must be an integer"),
    ({"regularization": -0.1}, ValueError, r"regularization=-0.1: must be >= 0"),
    ({"regularization": float("nan")}, ValueError, r"regularization=nan: must be finite"),
    ({"alpha": -1}, ValueError, r"alpha=-1.0: must be >= 0"),
    ({"alpha": "10"}, TypeError, r"alpha must be a real number, got str"),
    ({"iterations": -1}, ValueError, r"iterations=-1: must be >= 0"),
    ({"iterations": 10**20}, ValueError, r"iterations=10{20}: too large"),
    ({"iterations": np.float64}, TypeError,  # implicit's 4th positional argument: a dtype
     r"^iterations must be an integer, got the dtype <class 'numpy.float64'>: the 4th "
     r"argument of implicit's AlternatingLeastSquares is its dtype, .* pass dtype= by name$"),
    ({"epsilon": 0}, ValueError, r"epsilon=0.0: must be > 0"),
    ({"feedback": "implict"}, ValueError, r"feedback='implict': expected one of 'implicit'"),
    ({"confidence": "sqrt"}, ValueError, r"confidence='sqrt': expected one of"),
    ({"solver": np.str_("lu")}, ValueError, r"^solver='lu': expected one of"),  # not np.str_(
    ({"dtype": np.float16}, ValueError, r"dtype=float16: expected float32 or float64"),
    ({"dtype": "banana"}, TypeError, r"dtype='banana' is not a NumPy dtype"),
    # (an array's repr of many lines was the message; a tuple of a negative shape gave
    # NumPy's ValueError, "invalid shape in fixed-type tuple")
    ({"dtype": np.zeros((9, 9))}, TypeError, r"^dtype=<ndarray> is not a NumPy dtype; use "
                                             r"float32 or float64$"),
    ({"dtype": ("f4", -1)}, TypeError, r"^dtype=\('f4', -1\) is not a NumPy dtype"),
    ({"backend": "tpu"}, ValueError, r"backend='tpu': expected one of 'auto', 'cpu', 'gpu'"),
    ({"callback": 3}, TypeError, r"callback must be callable"),
    ({"callback": lambda iteration, seconds: None}, TypeError,  # refused before iteration 1
     r"^callback must take three arguments, callback\(iteration, seconds, loss\); "
     r"<lambda>\(iteration, seconds\) cannot \(too many positional arguments\)$"),
    ({"random_state": -1}, ValueError, r"random_state=-1: must be >= 0"),
    ({"random_state": "x"}, TypeError, r"random_state must be None, an int or a numpy"),
    ({"random_state": 1.5}, TypeError, r"random_state must be None, .*got float 1.5"),
    # a value whose repr takes lines is named by its type alone (its repr was the message)
    ({"factors": sp.csr_matrix((2, 2))}, TypeError, r"^factors must be an integer, got "
                                                    r"csr_matrix$"),
    ({"alpha": np.arange(40.0)}, TypeError, r"^alpha must be a real number, got ndarray$"),
    ({"alpha": "1" * 200}, TypeError, r"^alpha must be a real number, got str '1{37}\.\.\.1{38}'$"),
    ({"solver": np.array(["cg"])}, ValueError,  # (taken as solver="['cg']" before, which
    # is not "cg": it ran Cholesky; two values gave NumPy's "truth value of an array")
     r"^solver=array\(\['cg'\], dtype='<U2'\): expected one of 'cholesky'"),
    ({"random_state": np.random.RandomState(0)}, TypeError,  # scikit-learn's kind
     r"got RandomState RandomState\(MT19937\).*: draw a seed from it, "
     r"random_state=rs.randint\(2\*\*31\)$"),
    ({"feedback": "explicit", "regularization": 0}, ValueError,
     r"regularization=0 with feedback='explicit'"),
])
def test_bad_hyperparameters(R, params, error, message):
    with pytest.raises(error, match=message):
        fit(R, **params)


@pytest.mark.parametrize("params, message", [
    ({"feedback": "explicit", "alpha": 40}, "alpha=40.0 has no effect with "
                                            "feedback='explicit' (ratings, no confidences)"),
    ({"feedback": "explicit", "confidence": "log", "epsilon": 2.0},
     "confidence='log', epsilon=2.0 have no effect with feedback='explicit' (ratings, no "
     "confidences)"),
    ({"feedback": "explicit", "epsilon": 2.0},  # one reason, not linear confidence's too
     "epsilon=2.0 has no effect with feedback='explicit' (ratings, no confidences)"),
    ({"epsilon": 3.0}, "epsilon=3.0 has no effect with confidence='linear'"),
    ({"cg_steps": 5, "feedback": "explicit", "alpha": 2},
     "alpha=2.0 has no effect with feedback='explicit' (ratings, no confidences); "
     "cg_steps=5 has no effect with solver='cholesky'"),
])
def test_settings_that_act_on_nothing_are_warned_of(R, params, message):
    """(As scikit-learn warns of l1_ratio without an elastic-net penalty.) The same values
    where they act, or left at their defaults, say nothing."""
    with pytest.warns(UserWarning, match=f"^{re.escape(message)}$") as caught:
        fit(R, **params)
    assert len(caught) == 1 and caught[0].filename == __file__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(R, alpha=40, confidence="log", epsilon=2.0, solver="cg", cg_steps=5)
        fit(R, feedback="explicit", alpha=10, epsilon=1)  # the defaults (an int alpha too)


@pytest.mark.parametrize("values", [[0.0, 0.0, 0.0], [0.0, -1.0, -2.0]])
def test_implicit_feedback_without_a_positive_value_is_warned_of(values):
    """Nothing to learn (every preference 0): the factors go to 0. Said once; not for
    ratings, nor where one value is positive."""
    R = sp.csr_matrix((values, ([0, 1, 2], [0, 1, 2])), shape=(3, 3))
    with pytest.warns(UserWarning, match=r"^user_items has no positive value: implicit "
                                         r"feedback learns the preference p = \[r > 0\] "
                                         r"of each entry, so nothing is learned") as caught:
        model = fit(R, factors=2, iterations=2)
    assert len(caught) == 1 and caught[0].filename == __file__
    assert not model.user_factors_.any() and not model.item_factors_.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(R, factors=2, iterations=2, feedback="explicit")
        fit(R + sp.csr_matrix(([1.0], ([0], [1])), shape=(3, 3)), factors=2, iterations=2)


def test_failed_fit_leaves_no_model(R):
    model = ALS(factors=0, backend="cpu")
    with pytest.raises(ValueError):
        model.fit(R)
    with pytest.raises(NotFittedError):
        model.recommend(0, R[0])


def test_a_row_system_that_does_not_factorize_is_solved_as_a_batch_would_be(monkeypatch):
    """Rounding alone could make a regularized system fail Cholesky (here forced: it
    always fails): the row is solved by LU, as the batched solves of many rows are, to the
    same solution. (It raised "row 0's system is not numerically positive definite", also
    where the system held factors that had overflowed, which fit now reports as such.)"""
    import scipy.linalg

    def fail(*args, **kwargs):
        raise np.linalg.LinAlgError("not positive definite (test)")

    R = random_interactions(10, 30, 0.3, seed=2)
    for feedback in ("implicit", "explicit"):
        model = ALS.from_factors(np.ones((10, 8)), np.random.default_rng(0).random((30, 8)),
                                 regularization=0.5, feedback=feedback, backend="cpu")
        factorized = model.recalculate_user(0, R[0])
        with monkeypatch.context() as patch:
            patch.setattr(scipy.linalg, "cho_factor", fail)
            np.testing.assert_allclose(model.recalculate_user(0, R[0]), factorized,
                                       rtol=1e-5)


def test_input_is_not_modified_and_duplicates_are_summed(R):
    """A CSR matrix with unsorted indices and repeated entries (scipy keeps both when
    built from its arrays) is fitted as its canonical form, with the repeats summed (as
    scipy's conversions from COO sum them), and is left as it was."""
    indices, data, indptr = [], [], [0]
    summed = R.copy()
    for u in range(R.shape[0]):
        cols, vals = R.indices[R.indptr[u]:R.indptr[u + 1]], R.data[R.indptr[u]:R.indptr[u + 1]]
        if u % 3 == 0:  # every third user's entries twice
            cols, vals = np.r_[cols, cols], np.r_[vals, vals]
            summed.data[R.indptr[u]:R.indptr[u + 1]] *= 2
        indices += list(cols[::-1])  # unsorted
        data += list(vals[::-1])
        indptr.append(len(indices))
    raw = sp.csr_matrix((np.array(data, R.dtype), indices, indptr), shape=R.shape)
    assert not raw.has_canonical_format and raw.nnz > R.nnz
    before = (raw.data.copy(), raw.indices.copy(), raw.indptr.copy())
    np.testing.assert_array_equal(fit(raw, random_state=0).user_factors_,
                                  fit(summed, random_state=0).user_factors_)
    for a, b in zip(before, (raw.data, raw.indices, raw.indptr)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method, args", [
    ("recommend", (0, None)), ("similar_items", (0,)), ("similar_users", (0,)),
    ("recalculate_user", (0, None)), ("recalculate_item", (0, None)),
    ("partial_fit_users", ([0], None)), ("partial_fit_items", ([0], None)),
    ("explain", (0, None, 0)), ("predict", ([0], [0])), ("to_cpu", ()), ("to_gpu", ()),
    ("save", ("model.npz",)),
])
def test_unfitted_model_says_call_fit(method, args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # save() would write here
    unfitted = r"not fitted yet: call fit\(user_items\) first"
    with pytest.raises(NotFittedError, match=unfitted):
        getattr(ALS(), method)(*args)
    assert not list(tmp_path.iterdir())
    for name in ("user_factors", "item_factors"):  # also AttributeErrors, as hasattr wants
        with pytest.raises(NotFittedError, match=unfitted):
            getattr(ALS(), name)
        assert not hasattr(ALS(), name)


@pytest.mark.skipif(gpu.unavailable_reason() is None, reason="a GPU backend is available here")
def test_gpu_backend_without_gpu_says_why(R):
    with pytest.raises(BackendUnavailableError, match=r"backend='gpu' cannot run: .*backend='cpu'"):
        fit(R, backend="gpu")


def test_zero_regularization_with_singular_systems_is_refused_on_every_backend(backend):
    """Implicit, lambda = 0: each row's system has the fixed factors' rank. Fewer items
    (or users) than factors: refused before training or solving, alike everywhere;
    factors of lower rank: found factorizing the shared part Y^T Y on the host before a
    fold-in solves, alike everywhere too (the GPU's Cholesky gave NaN, reported in other
    words), and a partial fit leaves the model as it was."""
    R = random_interactions(12, 3, 0.6, seed=1)
    with pytest.raises(ValueError, match="regularization=0 with factors=6 and 3 items: "
                                         "Y\\^T Y, .* is singular; use regularization > 0 "
                                         "or factors <= 3"):
        fit(R, factors=6, regularization=0.0, backend=backend)
    # As many items as factors: allowed, and each user's square system is solved exactly
    # (X Y^T = P). fit() is seeded: lambda = 0 leaves the factors' scale free, and some
    # starts grow them until float32's Cholesky of X^T C X fails (CI drew one at stop 48).
    model = fit(R, factors=3, regularization=0.0, backend=backend).to_cpu()
    np.testing.assert_allclose(model.user_factors_ @ model.item_factors_.T,
                               (R.toarray() > 0).astype(np.float32), atol=1e-3)
    X = np.random.default_rng(0).random((4, 6))
    Y = np.random.default_rng(1).random((8, 6))
    row = sp.csr_matrix(np.array([[1.0, 0, 2.0, 0, 0, 0, 0, 0]]))
    few = ALS.from_factors(X, Y[:3], regularization=0.0, backend=backend)
    for users in ([0], np.arange(4)):  # a fold-in of one row, and of many
        with pytest.raises(ValueError, match="factors=6 and 3 fixed-side rows"):
            few.recalculate_user(users, R[users])
    Y[:, 5] = 0  # rank 5 < 6, and a zero pivot whatever the rounding (no near-zero one)
    model = ALS.from_factors(X, Y, regularization=0.0, backend=backend)
    for solver, call in (("cholesky", lambda: model.recalculate_user(0, row)),
                         ("cholesky", lambda: model.recommend(0, row, recalculate_user=True)),
                         ("cholesky", lambda: model.partial_fit_users([4], row)),
                         ("cg", lambda: model.recalculate_user(0, row))):  # (solved exactly)
        model.set_params(solver=solver)
        with pytest.raises(ValueError, match=r"^regularization=0.0: Y\^T Y \+ regularization "
                                             r"\* I is singular \(factors=6 with 8 "
                                             r"fixed-side rows\); use regularization > 0$"):
            call()
    assert model.to_cpu().user_factors_.shape == (4, 6)
    np.testing.assert_array_equal(model.to_cpu().user_factors_, X.astype(np.float32))


def test_a_fold_in_against_factors_too_large_for_their_dtype_says_so(backend):
    """Fixed factors whose products overflow float32 in sum: 4,000 rows of norm up to
    1.1e19 (each row's scores are finite; from_factors refuses rows beyond 1.8e19), whose
    Y^T Y is infinite, and so are the fold-in's systems. It said "regularization=0.01: the
    rows' systems are not positive definite (fixed factors of rank below factors=3?); use
    regularization > 0", of a model whose regularization is > 0 (found by a sweep of
    fold-ins)."""
    row, Y = _overflowing_fold_in()
    X = np.ones((4, 3))
    model = ALS.from_factors(X, Y, backend=backend)
    for call in (lambda: model.transform(row),
                 lambda: model.recommend(0, row, recalculate_user=True)):
        with pytest.raises(ValueError, match=rf"^the fixed factors \(up to {_largest(Y)} in "
                                             rf"magnitude\) are too large: their products "
                                             rf"overflow float32; scale them down or use "
                                             rf"dtype=float64$"):
            call()
    # in float64 the same factors fold in
    wide = ALS.from_factors(X, Y, backend=backend, dtype=np.float64)
    assert np.isfinite(wide._backend.to_numpy(wide.transform(row))).all()


def _overflowing_fold_in() -> tuple[sp.csr_matrix, np.ndarray]:
    """A row of 2,400 entries, and 4,000 item factors of up to 2e18 x 5 whose sums of
    products (Y^T Y, and the row's own) overflow float32."""
    Y = np.random.default_rng(0).standard_normal((4000, 3)) * 2e18
    return random_interactions(1, 4000, 0.6, seed=3), Y


def _largest(Y: np.ndarray) -> str:
    """How an error shows the largest value of factors ``Y`` (as float32), for a regex."""
    return re.escape(f"{float(np.abs(Y.astype(np.float32)).max()):.3g}")


def test_a_fold_in_whose_float32_systems_fail_names_the_scale():
    """The GPU kernels solve in float32, where the CPU solves a few rows in float64 and
    folds them in. Factors of 1e18 and confidences of 4,000: Y^T Y is finite in float32,
    but the weighted systems' Cholesky is not: named with the factors' scale, not as a
    rank below the factors with "use regularization > 0" (the regularization is 0.01).
    And explicit ratings against factors whose products overflow float32 in sum."""
    gpu = emulated_backend()
    row = sp.csr_matrix(np.array([[100.0, 0, 50, 0, 0, 3, 0, 0]]))
    Y = np.random.default_rng(0).standard_normal((8, 3))
    model = ALS.from_factors(np.ones((4, 3)), Y * 1e18, alpha=40.0, backend=gpu)
    with pytest.raises(ValueError, match=r"^regularization=0.01: the rows' systems are not "
                                         r"numerically positive definite in float32 \(the "
                                         r"fixed factors are up to 2.33e\+18 in magnitude\); "
                                         r"use a larger regularization, or scale the factors "
                                         r"or the values down$"):
        model.transform(row)
    long_row, Y = _overflowing_fold_in()
    explicit = ALS.from_factors(np.ones((4, 3)), Y, feedback="explicit", backend=gpu)
    with pytest.raises(ValueError, match=rf"^the fixed factors \(up to {_largest(Y)} in "
                                         rf"magnitude\) are too large: their products "
                                         rf"overflow float32"):
        explicit.transform(long_row)


def test_a_regularization_too_small_for_the_factors_scale_is_named_so():
    """Y^T Y + lambda I with lambda > 0 that is singular in float64 (factors grown huge:
    lambda is lost in rounding): said to be numerically singular, with a larger lambda
    (or fewer factors than fixed rows) as the fix, not "use regularization > 0"."""
    from gpu_als.backends.base import regularized_gram

    huge = np.full((3, 3), 1e20)  # rank 1
    with pytest.raises(ValueError, match=r"^regularization=0.001: Y\^T Y \+ regularization "
                                         r"\* I is numerically singular \(factors=3 with 2 "
                                         r"fixed-side rows\); use a larger regularization or "
                                         r"factors <= 2$"):
        regularized_gram(huge, 0.001, 2)
    with pytest.raises(ValueError, match=r"is singular \(factors=3 with 5 fixed-side rows\); "
                                         r"use regularization > 0$"):
        regularized_gram(np.zeros((3, 3)), 0.0, 5)


@pytest.mark.parametrize("solver", ["cholesky", "pcg"])
def test_a_shared_part_that_turns_numerically_singular_mid_fit_is_named_so_on_every_backend(
        backend, solver):
    """8 factors of 5 users and a regularization of 1e-6: the first user half-step makes
    X^T X + lambda I numerically singular (lambda lost against X's scale), and the item
    half-step fails. The CPU refuses it there; a GPU's Cholesky made NaN of it, reported
    as "numerically unstable in float32; use dtype=float64" (where float64 is singular
    too), found by a random sweep of settings. Now every backend names it alike, and
    still without the loss where the fit fails in its one iteration."""
    import warnings

    R = random_interactions(5, 20, 0.5, seed=1)
    for loss in (True, False):
        model = ALS(factors=8, regularization=1e-6, iterations=1, solver=solver,
                    backend=backend, random_state=0, show_progress=False,
                    calculate_training_loss=loss)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # (more factors than users)
            with pytest.raises(ValueError, match=r"^regularization=1e-06: Y\^T Y \+ "
                                                 r"regularization \* I is numerically singular "
                                                 r"\(factors=8 with 5 fixed-side rows\); use a "
                                                 r"larger regularization or factors <= 5$"):
                model.fit(R)
        assert not hasattr(model, "user_factors_")


def test_more_factors_than_users_or_items_is_warned_of(backend):
    """More factors than the fewer side's rows: the factors beyond them fit nothing, and
    the fit says so (a small regularization leaves every system near singular there: in
    float32 on a GPU a fit can fail); as many is silent."""
    import warnings

    R = random_interactions(12, 3, 0.6, seed=1)
    with pytest.warns(UserWarning, match=r"^factors=5 with 3 items: the factors span at "
                                         r"most 3 dimensions, and the other 2 fit nothing "
                                         r"\(only the regularization sets them\); factors=3 "
                                         r"can fit the data as well, for less work$"):
        fit(R, factors=5, backend=backend)
    with pytest.warns(UserWarning, match=r"^factors=2 with 1 user: the factors span at "
                                         r"most 1 dimension, and the other 1"):
        fit(R[:1], factors=2, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit(R, factors=3, backend=backend)


def test_what_keeps_the_gpu_backend_from_running_is_named(monkeypatch, R, caplog):
    """gpu.unavailable_reason against a stand-in ``cupy`` module in each state: no
    device, a broken driver, no NVRTC (CuPy loads it only to compile the first kernel,
    too late for backend="auto" to choose the CPU), or ready."""
    import types

    def fake_cupy(devices=1, nvrtc_error=None, driver_error=None):
        def count():
            if driver_error:
                raise driver_error
            return devices

        def nvrtc_version():
            if nvrtc_error:
                raise nvrtc_error
            return (12, 8)

        cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=count),
                                     nvrtc=types.SimpleNamespace(getVersion=nvrtc_version))
        return types.SimpleNamespace(cuda=cuda)

    for module, reason in [
            (fake_cupy(devices=0), "CuPy found no CUDA device"),
            (fake_cupy(driver_error=RuntimeError("driver too old")),
             r"CuPy found no usable CUDA device \(driver too old\)"),
            (fake_cupy(nvrtc_error=OSError('Failure finding "libnvrtc.so.12"')),
             r'CuPy cannot load NVRTC, which compiles the kernels \(Failure finding '
             r'"libnvrtc.so.12"\); install gpu-als\[gpu\] .* which bring it')]:
        monkeypatch.setitem(sys.modules, "cupy", module)
        assert re.fullmatch(reason, gpu.unavailable_reason()), reason
        with pytest.raises(BackendUnavailableError, match="backend='gpu' cannot run: " +
                           reason):
            fit(R, backend="gpu")
        with caplog.at_level("INFO", logger="gpu_als"):
            assert fit(R, backend="auto").backend_ == "cpu"
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    assert gpu.unavailable_reason() is None


def test_auto_backend_logs_its_choice(R, caplog):
    with caplog.at_level("INFO", logger="gpu_als"):
        model = fit(R, backend="auto")
    assert f"using the {model.backend_.upper()} backend" in caplog.text


@pytest.fixture(scope="module")
def fitted():
    R = random_interactions(20, 15, 0.2, seed=0)
    return fit(R), R


class TestQueryErrors:
    def test_userid_out_of_range(self, fitted):
        model, R = fitted
        with pytest.raises(ValueError, match=r"userid 20 is out of range: the model has 20 users"):
            model.recommend(20, R[0])
        with pytest.raises(ValueError, match=r"userid -1 is out of range"):
            model.recommend([0, -1], R[:2])
        # uint64 ids past int64's range are named as given, not wrapped round to negative
        with pytest.raises(ValueError, match=r"^userid 18446744073709551615 is out of range"):
            model.recommend(np.array([3, 2**64 - 1], np.uint64), R[:2])
        with pytest.raises(ValueError, match=r"^userids 9223372036854775808 is out of range"):
            model.partial_fit_users(np.uint64(2**63), R[:1])

    def test_itemid_out_of_range(self, fitted):
        model, _ = fitted
        with pytest.raises(ValueError, match=r"itemid 15 is out of range: the model has 15 "
                                             r"items \(valid ids 0\.\.14\)"):
            model.similar_items(15)
        with pytest.raises(ValueError, match=r"filter_items 99 is out of range"):
            model.similar_items(0, filter_items=[99])

    def test_similar_users_errors_name_users(self, fitted):
        model, _ = fitted
        with pytest.raises(ValueError, match=r"userid 20 is out of range: the model has 20 "
                                             r"users"):
            model.similar_users(20)
        with pytest.raises(ValueError, match=r"filter_users 25 is out of range: the model has "
                                             r"20 users"):
            model.similar_users(0, filter_users=[25])
        with pytest.raises(ValueError, match=r"^users -1 is out of range"):
            model.similar_users(0, users=[-1, 2])
        with pytest.raises(ValueError, match="pass filter_users or users, not both"):
            model.similar_users(0, filter_users=[1], users=[2])
        with pytest.raises(ValueError, match="pass filter_items or items, not both"):
            model.recommend(0, filter_already_liked_items=False, filter_items=[1], items=[2])

    def test_rows_must_match_userids(self, fitted):
        model, R = fitted
        with pytest.raises(ValueError, match=r"user_items has shape \(3, 15\), expected \(2, 15\)"):
            model.recommend([0, 1], R[:3])
        with pytest.raises(ValueError, match=r"expected \(1, 15\).*fitted on; to query a few "
                                             r"rows of a whole matrix, pass user_items\[userid\]"):
            model.recommend(0, R)  # implicit < 0.5 took the whole matrix
        with pytest.raises(ValueError, match=r"fitted on$"):
            model.recommend([0, 1], R[:1])
        with pytest.raises(ValueError, match=r"pass item_users\[itemid\]"):
            model.recalculate_item(0, R.T.tocsr())

    def test_user_items_required_for_filtering(self, fitted):
        model, _ = fitted
        with pytest.raises(ValueError, match="user_items is required"):
            model.recommend(0)

    @pytest.mark.parametrize("N", [0, -3])
    def test_bad_N(self, fitted, N):
        model, R = fitted
        with pytest.raises(ValueError, match=rf"N={N}: must be >= 1"):
            model.recommend(0, R[0], N=N)

    def test_non_integer_ids(self, fitted):
        model, R = fitted
        with pytest.raises(TypeError, match=r"^userid must be an integer or an array of "
                                            r"integers, got float 1.5$"):
            model.recommend(1.5, R[0])
        with pytest.raises(TypeError, match=r"^userid must be an integer or an array of "
                                            r"integers, got an array of dtype float64$"):
            model.recommend([1.0, 2.0], R[[1, 2]])
        # a matrix given for the ids (its repr of two lines was the message, with the hint
        # about DataFrame ids), and a DataFrame's ids not first among others
        with pytest.raises(TypeError, match=r"^userid must be an integer or an array of "
                                            r"integers, got csr_matrix$"):
            model.recommend(R[:2], R[:2])
        with pytest.raises(TypeError, match=r"got an array of dtype object; these are factor "
                                            r"rows"):
            model.similar_items(np.array([7, "x"], dtype=object))

    def test_string_ids_point_to_the_id_maps(self, fitted):
        model, R = fitted
        with pytest.raises(TypeError, match=r"got str 'alice'; these are factor rows: .*row "
                                            r"r is model.user_ids_\[r\], and "
                                            r"model.user_rows\(ids\) gives"):
            model.recommend("alice", R[0])
        with pytest.raises(TypeError, match=r"got an array of dtype object; "
                                            r".*model.item_ids_\[r\], and "
                                            r"model.item_rows\(ids\)"):
            model.similar_items(np.array(["x", "y"], dtype=object))
        # no id at all: said as such, without the hint about ids
        with pytest.raises(TypeError, match=r"^itemid must be an integer or an array of "
                                            r"integers, got NoneType None$"):
            model.similar_items(None)
        with pytest.raises(TypeError, match=r"got float32 2.0$"):  # a NumPy scalar's value
            model.similar_items(np.float32(2))

    def test_filter_items_and_items_together(self, fitted):
        model, R = fitted
        with pytest.raises(ValueError, match="not both"):
            model.recommend(0, R[0], filter_items=[1], items=[2])

    def test_predict_shapes(self, fitted):
        model, _ = fitted
        with pytest.raises(ValueError, match=r"userids has shape \(2,\) but itemids has shape"):
            model.predict([0, 1], [0])

    def test_predict_ids_out_of_range(self, fitted):
        """(A negative id would otherwise score the last rows, without a word.)"""
        model, R = fitted
        n_users, n_items = R.shape
        for users, items, message in (
                ([0], [n_items], f"itemids {n_items} is out of range"),
                ([0], [-1], "itemids -1 is out of range"),
                ([n_users], [0], f"userids {n_users} is out of range"),
                ([-2], [0], "userids -2 is out of range")):
            with pytest.raises(ValueError, match=message):
                model.predict(users, items)

    def test_own_integer_ids_out_of_range_point_to_the_id_maps(self, fitted):
        """After fit(df) with integer ids, ``recommend(1001)`` for the user with id 1001 is
        the likely mistake: out of range, the message says the queries take factor rows
        and names the map; a model without ids (fitted on a matrix) says nothing of it."""
        pd = pytest.importorskip("pandas")
        model, R = fitted
        coo = R.tocoo()
        df = pd.DataFrame({"user": coo.row + 1000, "item": coo.col + 500, "value": coo.data})
        own = fit(df)
        assert own.user_ids_.min() == 1000
        n_users, n_items = len(own.user_ids_), len(own.item_ids_)
        user_hint = (r"is out of range: the model has \d+ users \(valid ids 0\.\.\d+\); these "
                     r"are factor rows, not the model's own ids: row r is "
                     r"model\.user_ids_\[r\], and model\.user_rows\(ids\) gives the rows")
        item_hint = (r"is out of range: the model has \d+ items .*; these are factor rows, "
                     r".*model\.item_ids_\[r\], and model\.item_rows")
        rows = own.user_rows([1000])
        for call, name, hint in (
                (lambda: own.recommend(1000, R[0]), "userid 1000 ", user_hint),
                (lambda: own.recommend(0, R[0], items=[500]), "items 500 ", item_hint),
                (lambda: own.recommend(0, R[0], filter_items=[n_items]),
                 f"filter_items {n_items} ", item_hint),
                (lambda: own.similar_items(500), "itemid 500 ", item_hint),
                (lambda: own.similar_users(1000), "userid 1000 ", user_hint),
                (lambda: own.similar_users(0, users=[n_users]), f"users {n_users} ",
                 user_hint),
                (lambda: own.predict([1000], [0]), "userids 1000 ", user_hint),
                (lambda: own.predict(rows, [500]), "itemids 500 ", item_hint),
                (lambda: own.explain(0, R, 500), "itemid 500 ", item_hint),
                (lambda: own.explain(1000, sp.csr_matrix((n_users, n_items)), 0),
                 "userid 1000 ", user_hint)):
            with pytest.raises(ValueError, match=f"^{name}{hint}"):
                call()
        with pytest.raises(ValueError, match=r"^userid 20 is out of range: the model has 20 "
                                             r"users \(valid ids 0\.\.19\)$"):
            model.recommend(20, R[0])
        with pytest.raises(ValueError, match=r"\(valid ids 0\.\.14\)$"):
            model.similar_items(0, items=[15])


def test_a_fit_or_growth_beyond_the_memory_is_refused_before_allocating(monkeypatch):
    """A matrix whose shape needs more memory than there is (ids used as indices, e.g.
    2**31 columns) is refused at once, not killed by the out-of-memory killer."""
    from gpu_als import data

    if sys.platform == "linux":
        assert data.available_memory() > 0
    monkeypatch.setattr(data, "available_memory", lambda: 10 * 2**20)  # 10 MiB
    wide = sp.csr_matrix(([1.0], ([0], [99_999])), shape=(1, 100_000))
    with pytest.raises(MemoryError, match=r"a fit of 1 users x 100,000 items at factors=64 "
                                          r"needs at least 25 MiB of memory and 10 MiB is "
                                          r"available; are the ids compact"):
        ALS(factors=64, backend="cpu", show_progress=False).fit(wide)
    model = ALS(factors=4, iterations=1, backend="cpu", show_progress=False).fit(
        sp.csr_matrix(np.eye(4, dtype=np.float32)))
    # 10,000,001 rows and an eighth to spare (SPARE_ROWS), 4 float32 factors: 172 MiB
    with pytest.raises(MemoryError, match="growing user_factors_ to 10,000,001 rows needs "
                                          "at least 172 MiB"):
        model.partial_fit_users([10_000_000], sp.csr_matrix(np.eye(4, dtype=np.float32)[:1]))
    assert model.user_factors_.shape == (4, 4)
    # the k x k systems: 3 float64 matrices, 2.4 GB at 10,000 factors ("Unable to allocate")
    monkeypatch.setattr(data, "available_memory", lambda: 2**31)  # 2 GiB
    # (should the check miss it, fail at once rather than fit 10,000 factors)
    monkeypatch.setattr(data, "Prepared", lambda *a, **k: pytest.fail("not refused"))
    with pytest.raises(MemoryError, match=r"a fit of 1 users x 100 items at factors=10,000 "
                                          r"needs at least 2.2 GiB of memory and 2.0 GiB is "
                                          r"available; its 10,000 x 10,000 systems alone take "
                                          r"most of it"):
        ALS(factors=10_000, backend="cpu", show_progress=False).fit(wide[:, -100:])


def _variants(rng):
    """CSR matrices and arrays, canonical or not, valid or not, as scipy builds them from
    their three arrays (which it does not check for order, repeats or range)."""
    R = sp.random(6, 9, density=0.4, format="csr", random_state=rng, dtype=np.float64)
    R.data[rng.random(R.nnz) < 0.2] = 0.0  # explicit zeros stay stored
    yield "canonical", R
    yield "csr_array", sp.csr_array(R)
    yield "float32", R.astype(np.float32)
    yield "float32 csr_array", sp.csr_array(R.astype(np.float32))
    yield "int values", R.astype(np.int64)
    yield "int64 indices", sp.csr_matrix((R.data, R.indices.astype(np.int64),
                                          R.indptr.astype(np.int64)), shape=R.shape)
    yield "one row", R[2]
    yield "empty rows", sp.csr_matrix(([1.0, 2.0, 3.0], [1, 5, 8], [0, 0, 3, 3, 3, 3, 3]),
                                      shape=R.shape)

    def raw(data, indices, indptr):
        m = sp.csr_matrix(R.shape)
        m.data, m.indices, m.indptr = (np.asarray(data, np.float64),
                                       np.asarray(indices, np.int32),
                                       np.asarray(indptr, np.int32))
        return m

    yield "unsorted", raw([1, 2, 3], [4, 1, 7], [0, 2, 3, 3, 3, 3, 3])
    yield "repeated", raw([1, 2, 3], [4, 4, 7], [0, 2, 3, 3, 3, 3, 3])
    yield "one column, 3 rows", raw([1, 2, 3], [4, 4, 4], [0, 1, 2, 3, 3, 3, 3])
    yield "repeat after an empty row", raw([1, 2], [4, 4], [0, 0, 2, 2, 2, 2, 2])
    yield "index out of range", raw([1, 2], [3, 9], [0, 2, 2, 2, 2, 2, 2])
    yield "negative index", raw([1, 2], [3, -1], [0, 1, 2, 2, 2, 2, 2])
    yield "indptr falls", raw([1, 2, 3], [1, 2, 3], [0, 2, 1, 3, 3, 3, 3])
    two = sp.csr_matrix((2, 9))
    two.data, two.indices, two.indptr = np.ones(2), np.array([1, 2], np.int32), \
        np.array([0, 3, 2], np.int32)
    yield "indptr falls, 2 rows", two
    yield "extra capacity", raw([1, 2, 3, 4], [1, 2, 3, 4], [0, 1, 3, 3, 3, 3, 3])
    yield "indptr too short", raw([1], [1], [0, 1])
    yield "indptr starts above 0", raw([1, 2, 3], [1, 2, 3], [1, 2, 3, 3, 3, 3, 3])


@pytest.mark.parametrize("copy", [True, False])
def test_checked_rows_equal_scipys_canonical_form(copy, monkeypatch):
    """The NumPy-checked path for canonical CSR input (copy=False: the queries') gives
    what SciPy's copy, full check and sum_duplicates give (the same arrays, dtypes and
    errors); anything else takes SciPy's path; the input is never modified, and is shared
    only with copy=False."""
    from gpu_als import data

    answered = []

    def fast(*args):
        answered.append(original(*args))
        return answered[-1]

    original = data._shared_canonical_csr
    canonical = ("canonical", "csr_array", "float32", "float32 csr_array", "int values",
                 "int64 indices",
                 "one row", "empty rows", "one column, 3 rows")
    for seed in range(3):
        for kind, matrix in _variants(np.random.default_rng(seed)):
            before = [a.copy() for a in (matrix.data, matrix.indices, matrix.indptr)]
            results = []
            answered.clear()
            for path in (fast, lambda *args: None):
                monkeypatch.setattr(data, "_shared_canonical_csr", path)
                try:
                    results.append(data.check_user_items_allow_empty(
                        matrix, np.float32, name="rows", copy=copy))
                except (ValueError, TypeError) as exc:
                    results.append(f"{type(exc).__name__}: {exc}")
            got, expected = results
            # its path: NumPy's checks for canonical rows that need not be copied
            assert len(answered) == (0 if copy else 1), kind
            assert copy or (answered[0] is not None) == (kind in canonical), kind
            if isinstance(expected, str):
                assert got == expected, kind
            else:
                assert type(got) is sp.csr_matrix and got.dtype == np.float32, kind
                for a, b in ((got.data, expected.data), (got.indices, expected.indices),
                             (got.indptr, expected.indptr)):
                    np.testing.assert_array_equal(a, b, err_msg=kind)
                    assert a.dtype == b.dtype, kind
                assert got.has_canonical_format, kind
                shared = any(np.shares_memory(a, b) for a in (got.data, got.indices)
                             for b in (matrix.data, matrix.indices))
                assert not (copy and shared), kind
                assert (got is matrix) == (not copy and kind == "float32"), kind
            for a, b in zip((matrix.data, matrix.indices, matrix.indptr), before):
                np.testing.assert_array_equal(a, b, err_msg=kind)


def test_weighted_rows_overflow_unify_index_dtypes_and_sum_in_float64():
    """The overflow of the loss's constant part (float64 values near the limit) is said as
    what it is, for ratings too; indptr and indices get one dtype (the GPU kernels take one
    index type for both); the constant sum(c * p) is summed in float64 (float32 rounds
    127 ones added to 1e8 away)."""
    from gpu_als.data import weighted_rows

    huge = sp.csr_matrix(np.array([[1e200, 0.0], [0.0, 1e200]]))
    with pytest.raises(ValueError, match=r"^the squares of the ratings overflow float64 "
                                         r"\(the largest value is 1e\+200\): scale the "
                                         r"values down$"):
        weighted_rows(huge, feedback="explicit")
    limit = sp.csr_matrix(np.array([[1e308, 0.0], [0.0, 1e308]]))
    with pytest.raises(ValueError, match=r"^the confidences overflow float64: alpha=1.0 times "
                                         r"the largest value 1e\+308 is too large; scale the "
                                         r"values down$"):  # (float64 already: no hint)
        weighted_rows(limit, feedback="implicit", alpha=1.0)
    R = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]], np.float32))
    R.indptr = R.indptr.astype(np.int64)  # as SciPy may leave them: only one widened
    rows = weighted_rows(R, feedback="implicit", alpha=1.0)
    assert rows.indptr.dtype == rows.indices.dtype == np.int64
    values = np.array([99_999_999.0] + [1e-9] * 127, np.float32)  # targets 1e8, then 1s
    one_row = sp.csr_matrix((values, np.arange(128), [0, 128]), shape=(1, 128))
    assert weighted_rows(one_row, feedback="implicit", alpha=1.0).loss_constant == \
        1e8 + 127


def test_an_empty_query_matrix_keeps_the_dtype_and_refuses_complex_values():
    from gpu_als.data import check_user_items_allow_empty

    empty = check_user_items_allow_empty(sp.csr_matrix((2, 3)), np.float32, name="rows")
    assert empty.shape == (2, 3) and empty.nnz == 0 and empty.dtype == np.float32
    with pytest.raises(TypeError, match="rows has dtype complex128: expected real numbers"):
        check_user_items_allow_empty(sp.csr_matrix((2, 3), dtype=complex), np.float32,
                                     name="rows")


def test_flags_must_be_true_or_false():
    """A flag given as text ("no") or a number was taken for its truth: "no" filtered, or
    folded in. Every flag of the queries and of from_dataframe is refused unless a bool."""
    pd = pytest.importorskip("pandas")
    from gpu_als.datasets import load_movielens_100k
    from gpu_als.evaluation import EarlyStopping

    R = sp.random(20, 15, density=0.3, format="csr", random_state=1, dtype=np.float32)
    model = ALS(factors=3, iterations=2, random_state=0, backend="cpu",
                show_progress=False).fit(R)
    frame = pd.DataFrame({"user": [1], "item": [2]})
    for flag, call in (
            ("filter_already_liked_items",
             lambda v: model.recommend(0, R[0], filter_already_liked_items=v)),
            ("recalculate_user", lambda v: model.recommend(0, R[0], recalculate_user=v)),
            ("recalculate_item",
             lambda v: model.similar_items(0, recalculate_item=v, item_users=R.T.tocsr()[0])),
            ("filter_already_liked_items",
             lambda v: model.recommend_frame([0], N=2, filter_already_liked_items=v)),
            ("drop_unknown", lambda v: from_dataframe(frame, item_ids=[2], drop_unknown=v)),
            ("restore_best", lambda v: EarlyStopping(model, R, R, restore_best=v)),
            ("halving", lambda v: tune(R, {"factors": [2]}, halving=v, show_progress=False,
                                       base_params={"iterations": 1})),
            ("show_progress", lambda v: tune(R, {"factors": [2]}, show_progress=v,
                                             base_params={"iterations": 1})),
            ("download", lambda v: load_movielens_100k(download=v))):
        for value in ("no", 0):
            with pytest.raises(TypeError, match=f"{flag} must be True or False, got "
                                                f"{type(value).__name__}"):
                call(value)
        with contextlib.suppress(FileNotFoundError):  # (no local MovieLens copy)
            call(np.bool_(False))  # NumPy's bools are bools


@pytest.mark.parametrize("options, error, message", [
    ({"num_threads": 0}, ValueError, "num_threads=0: must be >= 1"),
    ({"num_threads": -1}, ValueError, "num_threads=-1: must be >= 1"),
    ({"num_threads": "4"}, TypeError, "num_threads must be an integer, got str '4'"),
    ({"num_threads": 2.5}, TypeError, "num_threads must be an integer, got float 2.5"),
    ({"block_elements": 0}, ValueError, "block_elements=0: must be >= 1"),
])
def test_cpu_backend_options_are_checked(options, error, message):
    """Before, each of these was taken: num_threads=0 or -1 as the default, "4" and 2.5
    as given, block_elements=0 as one element per block."""
    from gpu_als.backends import CPUBackend

    with pytest.raises(error, match=re.escape(message)):
        CPUBackend(**options)
    assert CPUBackend(num_threads=None).num_threads >= 1


def test_gpu_backend_options_at_their_bounds_are_taken():
    from .conftest import emulated_backend

    backend = emulated_backend(memory_fraction=1, woodbury_fraction=1, split_length=0,
                               segment_length=1, tile_rows=1, woodbury_min_rows=0,
                               cg_tile_bytes=0)
    assert (backend.memory_fraction, backend.woodbury_fraction, backend.split_length,
            backend.segment_length, backend.tile_rows) == (1.0, 1.0, 0, 1, 1)


def test_memory_is_told_in_gib_from_one_gib(monkeypatch):
    from gpu_als import data

    monkeypatch.setattr(data, "available_memory", lambda: 2**30 - 2**20)
    for nbytes, said in ((2**30, "1.0 GiB"), (2**30 - 1, "1,024 MiB")):
        with pytest.raises(MemoryError, match=rf"^x needs at least {said} of memory and "
                                              rf"1,023 MiB is available$"):
            data.check_memory(nbytes, "x")


@pytest.mark.parametrize("options, error, message", [
    ({"split_length": -1}, ValueError, "split_length=-1: must be >= 0"),
    ({"segment_length": 0}, ValueError, "segment_length=0: must be >= 1"),
    ({"tile_rows": 0}, ValueError, "tile_rows=0: must be >= 1"),
    ({"tile_rows": 2.5}, TypeError, "tile_rows must be an integer, got float 2.5"),
    ({"memory_fraction": 0}, ValueError, "memory_fraction=0.0: must be > 0"),
    ({"memory_fraction": 2}, ValueError, "memory_fraction=2.0: must be <= 1"),
    ({"memory_fraction": float("nan")}, ValueError, "memory_fraction=nan: must be finite"),
    ({"woodbury": "no"}, TypeError, "woodbury must be True or False, got str"),
    ({"woodbury_fraction": True}, TypeError, "woodbury_fraction must be a real number"),
    ({"woodbury_fraction": 1.5}, ValueError, "woodbury_fraction=1.5: must be <= 1"),
    ({"woodbury_fraction": -0.5}, ValueError, "woodbury_fraction=-0.5: must be > 0"),
    ({"async_copies": 0}, TypeError, "async_copies must be True or False, got int"),
    ({"fused_threads": 512}, ValueError,
     "fused_threads=512: expected None (by occupancy), 128 or 256"),
    ({"fused_threads": 1}, ValueError,  # a positive count, but not a block size it has
     "fused_threads=1: expected None (by occupancy), 128 or 256"),
    ({"fused_threads": 0}, ValueError, "fused_threads=0: must be >= 1"),
    ({"fused_threads": True}, TypeError, "fused_threads must be an integer, got bool"),
    ({"fused_threads": 128.0}, TypeError, "fused_threads must be an integer, got float"),
])
def test_gpu_backend_options_are_checked_before_the_device(options, error, message,
                                                          monkeypatch):
    """Before, each of these was taken without a word: woodbury="no" as True,
    memory_fraction=2 as twice the free device memory, segment_length=0 as a division by
    zero. The check comes before the runtime, so no device is needed to be told."""
    def no_device():
        raise AssertionError("the runtime was made before the options were checked")

    monkeypatch.setattr(gpu, "CudaRuntime", no_device)
    with pytest.raises(error, match=re.escape(message)):
        gpu.GPUBackend(**options)


def test_prepared_item_rows_are_the_user_rows_transposed():
    """The item rows (R^T) come from the user rows through each entry's position in R,
    kept as int32 while the entries number fewer than 2^31 (4 bytes per entry less than
    int64 while held): the same weights and targets as weighting R^T directly."""
    from gpu_als.data import Prepared, weighted_rows

    R = random_interactions(40, 30, 0.2, seed=3)
    R.data = np.arange(1, R.nnz + 1, dtype=R.dtype)  # every entry told apart
    prepared = Prepared(R)
    assert prepared._t_position.dtype == np.int32
    _, items = prepared.rows(feedback="implicit", alpha=3.0)
    want = weighted_rows(sp.csr_matrix(R.T, dtype=np.float32), feedback="implicit",
                         alpha=3.0)
    for name in ("indptr", "indices", "weight", "target"):
        np.testing.assert_array_equal(getattr(items, name), getattr(want, name), name)
