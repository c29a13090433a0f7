"""gpu-als's URLs against S3 as s3fs speaks it, served by moto on this machine (no bucket,
no network): what the test suite runs on fsspec's in-memory filesystem, here through
s3fs, pointed at the local server by fsspec's own configuration
(``FSSPEC_S3_ENDPOINT_URL``), as a user would point it at MinIO.

    make s3-check                        # a venv of its own with s3fs and moto; or:
    pip install s3fs 'moto[server]'      # (neither is a dependency of gpu-als)
    python benchmarks/s3_check.py [--rows 20000]

Checks, each printed as ok or as what went wrong (the exit status counts the failures):
the command line trains from a CSV (gzip) and from a folder of Parquet files (with
Spark's ``_SUCCESS``) on S3 the models it trains from their local copies; writes models,
rankings, similar items and factors there; reads ``--init``, ``@FILE`` lists and models
from there; refuses a folder as an output, and warns of a bucket not found before the
work; ``ALS.save`` leaves the model there whole when
a save fails, and round-trips a model of 50 MB (a multipart upload); and two Dask worker
processes read the folder themselves (``--read-on-workers``), with ``--event-weights``,
and with ``--early-stopping`` on a ``--validation`` file there.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + detail}", flush=True)
    if not ok:
        FAILED.append(name)


def gpu_als(*argv: str) -> subprocess.CompletedProcess:
    """The command line in a process of its own, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "gpu_als", *argv], capture_output=True,
                          text=True, env=os.environ, cwd=ROOT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def same_model(a: str | Path, b: str | Path, atol: float = 0.0) -> bool:
    from gpu_als import ALS

    try:
        x, y = ALS.load(a, backend="cpu"), ALS.load(b, backend="cpu")
    except FileNotFoundError:  # (a command that failed)
        return False
    return (np.array_equal(x.user_ids_, y.user_ids_)
            and np.array_equal(x.item_ids_, y.item_ids_)
            and np.allclose(x.user_factors_, y.user_factors_, rtol=0, atol=atol)
            and np.allclose(x.item_factors_, y.item_factors_, rtol=0, atol=atol))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    port = free_port()
    # (before fsspec is imported, which reads its configuration from the environment then)
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                      AWS_DEFAULT_REGION="us-east-1",
                      FSSPEC_S3_ENDPOINT_URL=f"http://127.0.0.1:{port}",
                      PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    try:
        import pandas as pd
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        sys.exit(f"{exc}: pip install s3fs 'moto[server]' pandas pyarrow")
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # (the server's request log)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-als-s3-") as folder:
            run_checks(Path(folder), args.rows, pd, s3fs)
    finally:
        server.stop()
    print(f"{len(FAILED)} failed" + (f": {', '.join(FAILED)}" if FAILED else ""))
    return len(FAILED)


def run_checks(here: Path, rows: int, pd, s3fs) -> None:
    from gpu_als import ALS

    fs = s3fs.S3FileSystem(endpoint_url=os.environ["FSSPEC_S3_ENDPOINT_URL"])
    fs.mkdir("bucket")
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": rng.zipf(1.3, rows) % 2000, "item": rng.zipf(1.2, rows) % 500,
                       "event": rng.choice(["view", "cart", "buy"], rows, p=[.8, .15, .05]),
                       "value": rng.integers(1, 6, rows).astype(float)})
    df.to_csv(here / "events.csv", index=False)
    fs.pipe("bucket/events.csv.gz", gzip.compress((here / "events.csv").read_bytes()))
    (here / "events").mkdir()
    for k in range(4):
        df.iloc[k::4].to_parquet(here / "events" / f"part-{k}.parquet", index=False)
        fs.put(str(here / "events" / f"part-{k}.parquet"), f"bucket/events/part-{k}.parquet")
    fs.pipe("bucket/events/_SUCCESS", b"")
    fs.pipe("bucket/items.txt", b"1\n2\n3\n")
    common = ["--factors", "8", "--iterations", "3", "--backend", "cpu"]

    for source, local in (("s3://bucket/events.csv.gz", here / "events.csv"),
                          ("s3://bucket/events/", here / "events")):
        run = gpu_als("train", source, *common, "-o", "s3://bucket/models/m")
        gpu_als("train", str(local), *common, "-o", str(here / "m.npz"))
        check(f"train {source} -o s3://...", run.returncode == 0 and same_model(
            "s3://bucket/models/m.npz", here / "m.npz"), run.stderr[-500:])
    run = gpu_als("train", "s3://bucket/events/", "--iterations", "1", "--init",
                  "s3://bucket/models/m.npz", "-o", "s3://bucket/models/more.npz")
    gpu_als("train", str(here / "events"), "--iterations", "1", "--init",
            str(here / "m.npz"), "-o", str(here / "more.npz"))
    check("train --init s3://...", run.returncode == 0 and same_model(
        "s3://bucket/models/more.npz", here / "more.npz"), run.stderr[-500:])
    run = gpu_als("info", "s3://bucket/models/more.npz")
    check("info s3://...", run.returncode == 0 and "users: " in run.stdout, run.stderr)
    (here / "items.txt").write_text("1\n2\n3\n")
    for command, remote_args, local_args in (
            ("recommend", ["s3://bucket/events/", "-N", "5"], [str(here / "events"), "-N", "5"]),
            ("similar", ["--items", "@s3://bucket/items.txt"],
             ["--items", f"@{here / 'items.txt'}"]),
            ("export", ["--items"], ["--items"])):
        run = gpu_als(command, "s3://bucket/models/more.npz", *remote_args, "-o",
                      "s3://bucket/out/table.parquet")
        gpu_als(command, str(here / "more.npz"), *local_args, "-o",
                str(here / "table.parquet"))
        ok = run.returncode == 0
        if ok:
            with fs.open("bucket/out/table.parquet", "rb") as file:
                ok = pd.read_parquet(file).equals(pd.read_parquet(here / "table.parquet"))
        check(f"{command} ... -o s3://.../table.parquet", ok, run.stderr[-500:])
    run = gpu_als("export", "s3://bucket/models/more.npz", "-o", "s3://bucket/out")
    check("an output that is a folder is refused before the work", run.returncode == 2
          and run.stderr.endswith("--output s3://bucket/out is a folder: give a file name\n"),
          run.stderr)

    run = gpu_als("train", "s3://bucket/events/", *common, "-o", "s3://nobucket/m.npz")
    check("an output in a bucket not found: warned of before the work, its error named",
          run.returncode == 2 and run.stderr.startswith(
              "gpu-als train: warning: --output s3://nobucket/m.npz: there is no bucket "
              "'nobucket'") and run.stderr.endswith(
              "error: cannot write s3://nobucket/m.npz: The specified bucket does not "
              "exist\n"), run.stderr)

    model = ALS.load(here / "more.npz", backend="cpu")
    model.save("s3://bucket/models/more.npz")
    before = fs.cat("bucket/models/more.npz")
    savez = np.savez

    def fail(file, **arrays):
        file.write(b"PK\x03\x04half a model" * 1000)
        raise OSError("failed on purpose")

    np.savez = fail
    try:
        model.save("s3://bucket/models/more.npz")
    except OSError:
        pass
    finally:
        np.savez = savez
    fs.invalidate_cache()
    check("a failed save leaves the model there whole",
          fs.cat("bucket/models/more.npz") == before)
    big = ALS.from_factors(rng.random((200_000, 64), dtype=np.float32),
                           np.ones((100, 64), np.float32), backend="cpu")
    big.save("s3://bucket/models/big")
    loaded = ALS.load("s3://bucket/models/big", backend="cpu")
    check(f"a model of {fs.size('bucket/models/big.npz') / 1e6:.0f} MB round-trips",
          np.array_equal(loaded.user_factors_, big.user_factors_))

    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster:
        validation = df.sample(200, random_state=1).assign(  # (mostly pairs not in the file)
            item=lambda d: d["item"].sample(frac=1, random_state=2).to_numpy())
        fs.pipe("bucket/validation.csv", validation.to_csv(index=False).encode())
        validation.to_csv(here / "validation.csv", index=False)
        stopping = ["--early-stopping", "2", "--iterations", "6"]
        run = gpu_als("train", "s3://bucket/events/", *common, *stopping, "--validation",
                      "s3://bucket/validation.csv", "--scheduler", cluster.scheduler_address,
                      "--read-on-workers", "-o", "s3://bucket/models/stopped.npz")
        local = gpu_als("train", str(here / "events"), *common, *stopping, "--validation",
                        str(here / "validation.csv"), "-o", str(here / "stopped.npz"))
        check("train s3://... --read-on-workers --early-stopping --validation s3://...",
              run.returncode == 0 and run.stdout.splitlines()[1] == local.stdout.splitlines()[
                  1].replace(str(here / "validation.csv"), "s3://bucket/validation.csv")
              and same_model("s3://bucket/models/stopped.npz", here / "stopped.npz",
                             atol=1e-3), run.stdout + run.stderr[-800:] + local.stdout)
        for extra in ([], ["--event-weights", "event=view:1,cart:3,buy:5"]):
            source = ["--value-col", "value"] if not extra else []
            frame = df if not extra else df.drop(columns="value")
            if extra:  # the values made from the labels: a file without them
                for k in range(4):
                    frame.iloc[k::4].to_parquet(here / "events" / f"part-{k}.parquet",
                                                index=False)
                    fs.put(str(here / "events" / f"part-{k}.parquet"),
                           f"bucket/events/part-{k}.parquet")
            run = gpu_als("train", "s3://bucket/events/", *common, *source, *extra,
                          "--scheduler", cluster.scheduler_address, "--read-on-workers",
                          "-o", "s3://bucket/models/workers.npz")
            gpu_als("train", str(here / "events"), *common, *source, *extra, "-o",
                    str(here / "workers.npz"))
            # (the sums of a block's entries in another order: float32 rounding apart)
            check(f"train s3://... --read-on-workers {' '.join(extra)}",
                  run.returncode == 0 and same_model("s3://bucket/models/workers.npz",
                                                     here / "workers.npz", atol=1e-3),
                  run.stderr[-800:])


if __name__ == "__main__":
    sys.exit(main())
