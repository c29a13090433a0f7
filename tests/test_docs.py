"""The documentation runs: every docstring example in the package, the code blocks of README
and the user guide; and its links lead somewhere."""

import doctest
import importlib
import pkgutil
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import gpu_als

from .conftest import skip_or_fail

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
GUIDE = ROOT / "docs" / "guide.md"


def test_docstring_examples_run():
    attempted = 0
    for module in pkgutil.walk_packages(gpu_als.__path__, "gpu_als."):
        result = doctest.testmod(importlib.import_module(module.name),
                                 optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.failed == 0, f"{module.name}: {result.failed} docstring examples fail"
        attempted += result.attempted
    assert attempted >= 10  # the examples are there to be run


@pytest.mark.parametrize("name", ["gpu_als", "gpu_als.evaluation", "gpu_als.datasets",
                                  "gpu_als.weighting", "gpu_als.tune", "gpu_als.plots",
                                  "gpu_als.distributed", "gpu_als.interop"])
def test_public_modules_say_what_they_export(name):
    """``__all__`` of each public module: every name in it exists, and every public
    function and class defined there is in it (``from gpu_als.evaluation import *`` gave
    numpy as ``np``, ``logging``, ``tqdm`` ... too)."""
    if name == "gpu_als.distributed":
        pytest.importorskip("dask")
    module = importlib.import_module(name)
    exported = set(module.__all__)
    assert len(exported) == len(module.__all__) and all(hasattr(module, n) for n in exported)
    defined = {n for n, value in vars(module).items() if not n.startswith("_")
               and callable(value) and getattr(value, "__module__", None) == name}
    assert defined <= exported, defined - exported
    star: dict = {}
    exec(f"from {name} import *", star)
    assert set(star) - {"__builtins__"} == exported


def python_block(heading: str, document: Path = README) -> str:
    """The first ```python block after ``heading`` in ``document`` (README.md)."""
    text = document.read_text()
    start = text.index(heading)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def test_readme_api_block_runs(tmp_path, monkeypatch):
    """README's "API at a glance", with a small clicks.npz and the rows it leaves to the
    reader."""
    R = sp.random(943, 60, density=0.05, format="csr", random_state=0, dtype=np.float32)
    R.data[:] = np.ceil(R.data * 5)
    sp.save_npz(tmp_path / "clicks.npz", R)
    monkeypatch.chdir(tmp_path)
    namespace = {"new_row": R[3], "new_rows": R[[4, 5]], "userids": np.array([0, 1, 2]),
                 "itemids": np.array([5, 6, 7])}
    block = python_block("## The API at a glance").replace("factors=64", "factors=8")
    exec(compile(block, str(README), "exec"), namespace)
    model = namespace["model"]
    assert namespace["ids"].shape == (10,) and namespace["factors"].shape == (8,)
    assert namespace["vectors"].shape == (2, 8)
    folded_in = model.recalculate_user(0, R[0]) @ model.item_factors_[5]
    assert namespace["score"] == pytest.approx(float(folded_in), rel=1e-4)
    assert model.user_factors_.shape == (945, 8)  # grown by partial_fit_users
    np.testing.assert_allclose(namespace["ratings"],
                               (model.user_factors_[:3] * model.item_factors_[5:8]).sum(1),
                               rtol=1e-5)
    twin = namespace["twin"]
    assert twin.factors == 8
    np.testing.assert_array_equal(namespace["same"].item_factors_, model.item_factors_)
    np.testing.assert_array_equal(twin.recommend(0, R[0])[0], model.recommend(0, R[0])[0])


def test_guide_early_stopping_block_runs():
    """The user guide's EarlyStopping example, smaller: it stops, and the refit has the
    best iteration's count."""
    from gpu_als import ALS
    from gpu_als.datasets import make_power_law

    def small_als(**params):
        return ALS(**{**params, "factors": 8, "backend": "cpu", "random_state": 0,
                      "show_progress": False})

    namespace = {"ALS": small_als, "train": make_power_law(300, 100, 4000, random_state=0,
                                                            device="cpu")}
    exec(compile(python_block("## Metrics per iteration", GUIDE), str(GUIDE), "exec"),
         namespace)
    stop, model = namespace["stop"], namespace["model"]
    assert len(stop.scores) == len(model.loss_history_) + stop.patience < 50
    assert model.loss_history_ and len(model.loss_history_) == stop.best_iteration + 1


def test_readme_own_ids_block_runs(tmp_path, monkeypatch, capsys):
    """README's "Your own ids": string ids through fit, recommend and a partial fit that
    updates a known user and appends new ones."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    people = ["ann", "bob"] + [f"user{j}" for j in range(40)]
    skus = [f"sku{j}" for j in range(25)]
    pairs = {(u, skus[i]) for u in people for i in rng.choice(25, 6, replace=False)}
    pd.DataFrame(sorted(pairs), columns=["uid", "sku"]).assign(n=2).to_csv(
        tmp_path / "clicks.csv", index=False)
    pd.DataFrame({"uid": ["ann", "cy", "cy", "dee"], "sku": ["sku3", "sku1", "new", "sku2"],
                  "n": [1, 4, 1, 2]}).to_csv(tmp_path / "today.csv", index=False)
    monkeypatch.chdir(tmp_path)
    block = python_block("### Your own ids").replace("factors=64", "factors=4")
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)
    model, ids, top = namespace["model"], namespace["ids"], namespace["top"]
    assert ids.shape == (2, 10) and set(model.item_ids_[ids].ravel()) <= set(skus)
    assert list(top["user"]) == ["ann"] * 10 + ["bob"] * 10  # before the partial fit
    assert list(top["item"]) == list(model.item_ids_[ids].ravel())
    scored = namespace["scored"]
    assert list(scored.columns) == ["uid", "sku", "n", "score"]
    bob = scored[scored["uid"] == "bob"].iloc[0]  # a user the partial fit leaves as it was
    assert bob["score"] == pytest.approx(float(
        model.predict(model.user_rows("bob"), model.item_rows(bob["sku"]))), rel=1e-6)
    assert "sku" in capsys.readouterr().out
    assert list(model.user_ids_) == sorted(people) + ["cy", "dee"]
    ann = list(model.user_ids_).index("ann")  # solved again from today's row only
    sku3 = list(model.item_ids_).index("sku3")  # sorted as strings: not column 3
    today = sp.csr_matrix(([1.0], ([0], [sku3])), shape=(1, 25))
    np.testing.assert_allclose(model.user_factors_[ann], model.recalculate_user(0, today),
                               rtol=1e-5)


@pytest.mark.parametrize("alpha", [1.0, 40.0])
def test_coming_from_implicit(alpha):
    """README's migration table: on 0/1 data implicit's alpha=a is our alpha=a - 1, its
    use_cg=False our default, its default our solver="cg"; same seed, same factors."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares as Implicit
        from threadpoolctl import threadpool_limits
    except ImportError as exc:
        skip_or_fail(f"implicit (dev extras) is not installed: {exc}")
    R = sp.random(200, 120, density=0.08, format="csr", random_state=1, dtype=np.float32)
    R.data[:] = 1
    common = dict(factors=8, regularization=0.05, iterations=3, random_state=0)
    for use_cg, solver, rtol in ((False, "cholesky", 1e-4), (True, "cg", 2e-3)):
        with threadpool_limits(1, "blas"):  # as implicit asks
            theirs = Implicit(alpha=alpha, use_cg=use_cg, calculate_training_loss=False,
                              **common)
            theirs.fit(R, show_progress=False)
        ours = gpu_als.ALS(alpha=alpha - 1, solver=solver, backend="cpu", show_progress=False,
                           **common).fit(R)
        scale = np.abs(theirs.user_factors).max()
        np.testing.assert_allclose(ours.user_factors_, theirs.user_factors,
                                   atol=rtol * scale, err_msg=solver)
        np.testing.assert_allclose(ours.item_factors_, theirs.item_factors,
                                   atol=rtol * np.abs(theirs.item_factors).max(), err_msg=solver)
        # the table's refit row: implicit's second fit goes on from its factors, as ours
        # with warm_start=True
        with threadpool_limits(1, "blas"):
            theirs.fit(R, show_progress=False)
        ours.set_params(warm_start=True).fit(R)
        np.testing.assert_allclose(ours.item_factors_, theirs.item_factors,
                                   atol=rtol * np.abs(theirs.item_factors).max(), err_msg=solver)


def test_readme_from_implicit_block_runs(tmp_path, monkeypatch):
    """README's conversion of an implicit model, on a small fitted one."""
    try:
        from implicit.cpu.als import AlternatingLeastSquares as Implicit
    except ImportError as exc:
        skip_or_fail(f"implicit (dev extras) is not installed: {exc}")
    R = sp.random(50, 30, density=0.2, format="csr", random_state=2, dtype=np.float32)
    theirs = Implicit(factors=4, iterations=2, random_state=0)
    theirs.fit(R, show_progress=False)
    theirs.save(str(tmp_path / "implicit_model.npz"))
    monkeypatch.chdir(tmp_path)
    block = python_block("### Coming from implicit")
    assert "from_implicit(implicit_model)" in block
    exec(compile(block, str(README), "exec"), {"implicit_model": theirs})
    saved = gpu_als.ALS.load(tmp_path / "model.npz", backend="cpu")
    np.testing.assert_array_equal(saved.item_factors_, theirs.item_factors)


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped,
    spaces as hyphens (a repeated heading's -1, -2 suffixes are not needed here)."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", markdown, flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_relative_links_lead_somewhere():
    """Every relative link of README.md and docs/*.md names a file of the checkout, and
    a heading of it where it has a #anchor (moving text between pages breaks these)."""
    pages = [README, *sorted((ROOT / "docs").glob("*.md"))]
    checked = 0
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), f"{page.name}: {target} (no such file)"
            if anchor:
                assert anchor in heading_anchors(linked.read_text()), \
                    f"{page.name}: {target} (no such heading)"
            checked += 1
    assert checked > 20


def test_guide_nonnegative_block_runs():
    """The user guide's nonnegative fit: its own assertion holds, and the constraint
    binds."""
    namespace = {"ALS": gpu_als.ALS,
                 "user_items": sp.random(200, 120, density=0.1, format="csr", random_state=1,
                                         dtype=np.float32)}
    exec(compile(python_block("## Nonnegative factors", GUIDE), str(GUIDE), "exec"), namespace)
    model = namespace["model"]
    assert model.solver == "nnls" and (model.item_factors_ == 0).any()


def test_guide_spark_block_runs():
    """The user guide's translation of a Spark job, on MovieLens-like ratings: its RMSE is
    evaluation.rmse's on the pairs the model has, the top-N has N items per user, and the
    audiences N users per item, the best first."""
    pd = pytest.importorskip("pandas")
    from gpu_als.data import from_dataframe
    from gpu_als.evaluation import rmse

    rng = np.random.default_rng(0)
    R = sp.random(60, 40, density=0.3, format="coo", random_state=1)
    ratings = pd.DataFrame({"userId": R.row + 1, "movieId": R.col + 100,
                            "rating": np.ceil(R.data * 5)})
    held = rng.random(len(ratings)) < 0.2
    train, test = ratings[~held], ratings[held]
    namespace = {"train": train, "test": test}
    exec(compile(python_block("## Coming from Spark MLlib", GUIDE), str(GUIDE), "exec"),
         namespace)
    model, scored, top = namespace["model"], namespace["scored"], namespace["top"]
    assert model.feedback == "explicit" and model.factors == 10
    assert 0 < len(scored) <= len(test)
    matrix, _, _ = from_dataframe(scored, "userId", "movieId", "rating",
                                  user_ids=model.user_ids_, item_ids=model.item_ids_)
    assert namespace["rmse"] == pytest.approx(rmse(model, matrix), rel=1e-6)
    assert len(top) == 10 * len(model.user_ids_)
    audience = namespace["audience"]
    assert list(audience.columns) == ["item", "user", "rank", "score"]
    assert len(audience) == 10 * len(model.item_ids_)
    best = audience[audience["rank"] == 1].iloc[0]  # the highest x_u . y_i of its item
    row = model.item_rows([best["item"]])[0]
    assert best["score"] == pytest.approx(float((model.user_factors_ @ model.item_factors_[row])
                                                .max()), rel=1e-6)
    table = namespace["item_table"]
    assert list(table["item"]) == list(model.item_ids_)
    np.testing.assert_array_equal(np.stack(table["factors"]), model.item_factors_)


def test_guide_evaluation_block_runs(movielens, capsys):
    """The user guide's evaluation example, on MovieLens 100K's positives: ALS above the
    popularity baseline, as the README's table has it."""
    from gpu_als.evaluation import binarize

    namespace = {"user_items": binarize(movielens.ratings, 4)}
    block = python_block("## Evaluation", GUIDE).replace("factors=64)", "factors=32, "
                                                         "backend='cpu', iterations=10)")
    assert "backend='cpu'" in block
    exec(compile(block, str(GUIDE), "exec"), namespace)
    als, popular = namespace["als"], namespace["popular"]
    assert set(als) == {"precision", "recall", "ndcg", "map", "users"}
    assert als["recall"] > popular["recall"] > 0.05
    assert capsys.readouterr().out.startswith("Recall@10: ALS 0.")


def test_guide_evaluation_of_a_dataframe_runs(movielens):
    """The guide's evaluation on a DataFrame, on MovieLens 100K's positives as a frame of
    ids: near the recall of its matrix, whose split has the same pairs in test."""
    pd = pytest.importorskip("pandas")
    from gpu_als.evaluation import binarize

    positives = binarize(movielens.ratings, 4).tocoo()
    df = pd.DataFrame({"user": positives.row + 1, "item": positives.col + 1})  # u.data's ids
    settings = "factors=32, backend='cpu', iterations=10, show_progress=False, random_state=0)"
    block = python_block("The same steps on a DataFrame", GUIDE).replace("factors=64)",
                                                                          settings)
    assert "backend='cpu'" in block
    namespace = {"df": df}
    # items whose every row went to test: the model of train_df has no factors for them
    with pytest.warns(UserWarning, match=r"^43 of the 11,079 rows of test name users or "
                                         r"items the ALS lacks: left out$"):
        exec(compile(block, str(GUIDE), "exec"), namespace)
    model, als = namespace["model"], namespace["als"]
    assert list(model.user_ids_) == sorted(set(df["user"]))
    matrix = {"user_items": binarize(movielens.ratings, 4)}
    exec(compile(python_block("## Evaluation", GUIDE).replace("factors=64)", settings),
                 str(GUIDE), "exec"), matrix)
    # 0.2169 against 0.2148, not equal: the frame's model has no factors for the items only
    # in test (their 43 rows left out), which the matrix's ranks among its candidates
    assert als["recall"] == pytest.approx(matrix["als"]["recall"], abs=0.01)
    assert als["recall"] > 0.15


def test_guide_temporal_split_block_runs(movielens, capsys):
    """The user guide's split by time, on MovieLens 100K's u.data (found where
    $GPU_ALS_DATA points, as the ``movielens`` fixture checks): the numbers it quotes."""
    pytest.importorskip("pandas")
    block = python_block("### Splitting by time", GUIDE).replace(
        "iterations=20)", "iterations=20, backend='cpu', random_state=42, show_progress=False)")
    assert "backend='cpu'" in block
    with pytest.warns(UserWarning, match="140 of the 11,079 rows of test name users or items "
                                         "the (ALS|PopularityRecommender) lacks: left out"):
        exec(compile(block, str(GUIDE), "exec"), {})
    assert capsys.readouterr().out == "Recall@10: ALS 0.124, popularity 0.068\n"


def test_guide_scikit_learn_pipeline_runs(movielens):
    """The guide's GridSearchCV over a Pipeline of ALS and a classifier, on MovieLens
    100K's users: ALS's factors predict a user's gender far better than chance."""
    pytest.importorskip("sklearn")
    pytest.importorskip("pandas")
    namespace: dict = {}
    exec(compile(python_block("## In scikit-learn's pipelines", GUIDE), str(GUIDE), "exec"),
         namespace)
    search = namespace["search"]
    assert len(search.cv_results_["params"]) == 4
    assert search.best_params_ == {"als__alpha": 1.0, "als__factors": 64}  # as printed
    assert search.best_score_ == pytest.approx(0.773, abs=0.0005)
    assert list(search.best_estimator_[:-1].get_feature_names_out()[:2]) == ["als0", "als1"]


def test_guide_datasets_block_runs(movielens):
    """The user guide's MovieLens example, on 100K (20M is not downloaded by the tests):
    the model of the positives has their users and items as ids."""
    pytest.importorskip("pandas")
    block = python_block("## Datasets", GUIDE)
    assert 'load_movielens("20m")' in block and "factors=128)" in block
    block = block.replace('load_movielens("20m")', 'load_movielens("100k", download=False)')
    block = block.replace("factors=128)", "factors=8, iterations=2, backend='cpu', "
                                          "show_progress=False)")
    namespace: dict = {}
    exec(compile(block, str(GUIDE), "exec"), namespace)
    df, model = namespace["df"], namespace["model"]
    positives = df[df["rating"] >= 4]
    assert len(df) == 100_000 and len(positives) == 55_375
    assert list(model.user_ids_) == sorted(set(positives["user"]))
    assert list(model.item_ids_) == sorted(set(positives["item"]))
    assert model.user_factors_.shape == (len(model.user_ids_), 8)


def test_readme_tune_block_runs():
    """README's search: the grid's 45 configurations are trials, the best refitted."""
    pytest.importorskip("pandas")
    from gpu_als.datasets import make_power_law

    train = make_power_law(300, 200, 5000, random_state=0, device="cpu")
    namespace = {"train": train}
    block = python_block("### Hyperparameter search")
    exec(compile(block.replace("K=10)", "K=10, show_progress=False)"), str(README), "exec"),
         namespace)
    result = namespace["result"]
    assert set(result.best_params) == {"factors", "regularization", "alpha"}
    assert len(result.table()) == 3 * 3 * 5 and not any(t.get("error") for t in result.trials)
    assert result.model.get_params()["factors"] == result.best_params["factors"]
    assert result.model.user_factors_.shape == (300, result.best_params["factors"])


def test_readme_dask_block_runs(tmp_path):
    """README's fits on a Dask cluster, on a cluster of threads in this process: of a
    matrix, then of a Parquet dataset read by the workers; ordinary fitted ALS models
    whose loss went down."""
    pytest.importorskip("dask.distributed")
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pytest.importorskip("dask.dataframe")
    from gpu_als.datasets import make_power_law

    block = python_block("### Several processes, GPUs or machines")
    assert "LocalCluster(n_workers=2)" in block and "ALS(factors=64)" in block
    block = block.replace("LocalCluster(n_workers=2)", "LocalCluster(n_workers=2, "
                          "processes=False, threads_per_worker=1, dashboard_address=':0')")
    block = block.replace("ALS(factors=64)", "ALS(factors=4, iterations=3, random_state=0, "
                          "backend='cpu', show_progress=False, calculate_training_loss=True)")
    R = make_power_law(150, 60, 1500, random_state=0, device="cpu").tocoo()
    events = pd.DataFrame({"user": R.row, "item": R.col, "value": R.data})
    (tmp_path / "events").mkdir()
    for part in range(3):  # a dataset of 3 files
        events.iloc[part::3].to_parquet(tmp_path / "events" / f"part.{part}.parquet")
    assert 'dd.read_parquet("events/")' in block
    block = block.replace('"events/"', repr(str(tmp_path / "events")))
    models = []
    block = block.replace("model = fit_distributed(", "model = keep(fit_distributed(") \
        .replace(", client)", ", client))")
    namespace = {"user_items": R.tocsr(), "keep": lambda m: models.append(m) or m}
    try:
        exec(compile(block, str(README), "exec"), namespace)
    finally:
        if "client" in namespace:
            cluster = namespace["client"].cluster
            namespace["client"].close()
            cluster.close()
    assert len(models) == 2
    for model in models:
        assert model.user_factors_.shape == (150, 4) and model.item_factors_.shape == (60, 4)
        losses = model.loss_history_
        assert len(losses) == 3 and losses[-1] < losses[0]
    np.testing.assert_allclose(models[1].item_factors_, models[0].item_factors_, atol=1e-5)


def shell_commands(markdown: str, program: str = "gpu-als") -> list[list[str]]:
    """The arguments of each ``program`` command in the shell blocks of ``markdown``: its
    lines joined where they end in a backslash, comments, pipes and redirections left
    out."""
    commands, inside, shell, line = [], False, False, ""
    for text in markdown.splitlines():
        if text.lstrip().startswith("```"):
            inside, shell = not inside, text.strip()[3:] in ("bash", "sh", "console", "")
            continue
        if not (inside and shell):
            continue
        line += text.rstrip("\\") + " "
        if text.endswith("\\"):
            continue
        tokens, line = shlex.split(line.strip().removeprefix("$ "), comments=True), ""
        for end in ("|", ">", "2>&1", "&&", ";"):
            tokens = tokens[:tokens.index(end)] if end in tokens else tokens
        if tokens[:1] == [program]:
            commands.append(tokens[1:])
    return commands


def test_documented_commands_parse(tmp_path, monkeypatch, capsys):
    """Every ``gpu-als`` command in a shell block of README.md and docs/*.md is one the
    command line takes: its options exist and their values parse (an option renamed or
    dropped fails here, not in a user's terminal)."""
    from gpu_als import benchmark, cli

    (tmp_path / "in_stock.txt").write_text("50\n181\n")  # README's --items @in_stock.txt
    monkeypatch.chdir(tmp_path)
    checked = 0
    for page in [README, *sorted((ROOT / "docs").glob("*.md"))]:
        for argv in shell_commands(page.read_text()):
            try:
                if argv[0] == "bench":
                    benchmark.build_parser().parse_args(argv[1:])
                else:
                    _, extra = cli.build_parser().parse_known_args(argv)
                    assert not extra, f"{page.name}: gpu-als {shlex.join(argv)}: {extra}"
            except SystemExit:
                pytest.fail(f"{page.name}: gpu-als {shlex.join(argv)}: "
                            f"{capsys.readouterr().err.strip()}")
            checked += 1
    assert checked >= 30
