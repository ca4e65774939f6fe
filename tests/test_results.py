import multiprocessing as mp

import pandas as pd
import pytest

from cnnlab import results
from cnnlab.errors import UsageError


def _append_many(args):
    outputs, worker, n = args
    for i in range(n):
        row = {"run_id": f"w{worker}-{i}", "value": i}
        if i % 3 == 0:
            row[f"extra_{worker}"] = worker  # new columns force whole-table rewrites
        results.append_row(outputs, row)


def test_concurrent_appends_from_processes_all_survive(tmp_path):
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_append_many, [(str(tmp_path), w, 25) for w in range(4)])
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == 100 and df.run_id.is_unique
    assert set(df.run_id) == {f"w{w}-{i}" for w in range(4) for i in range(25)}
    assert {f"extra_{w}" for w in range(4)} <= set(df.columns)


def test_flatten_and_row_layout():
    cfg = {"seed": 1, "model": {"name": "lenet5"}, "optim": {"lr": 0.1, "betas": [0.9, 0.99]}}
    row = results.make_row(cfg, {"run_id": "x"}, {"test_acc": 0.5})
    assert list(row)[:2] == ["run_id", "model"] and row["lr"] == 0.1
    assert row["optim.betas"] == "0.9,0.99" and row["test_acc"] == 0.5


def _table():
    return pd.DataFrame({"model": ["a", "a", "b", "b"], "data": ["x", "y", "x", "y"],
                         "test_acc": [0.1, 0.2, 0.3, 0.5], "seed": [0, 0, 0, 1]})


def test_query_filters_sorts_and_picks_columns():
    df = results.query(_table(), ["model=b", "test_acc>0.3"], "data,test_acc")
    assert df.to_dict("list") == {"data": ["y"], "test_acc": [0.5]}
    df = results.query(_table(), ["seed!=1"], sort="test_acc", descending=True)
    assert df.test_acc.tolist() == [0.3, 0.2, 0.1]
    with pytest.raises(UsageError, match="no column 'nope'"):
        results.query(_table(), ["nope=1"])
    with pytest.raises(UsageError, match="not a number"):
        results.query(_table(), ["test_acc>abc"])


def test_pivot():
    p = results.pivot(_table(), ["rows=model", "cols=data", "values=test_acc"])
    assert p.loc["b", ("test_acc", "y")] == 0.5 and p.loc["a", ("test_acc", "x")] == 0.1
    with pytest.raises(UsageError):
        results.pivot(_table(), ["rows=model"])
