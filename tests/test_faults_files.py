"""Faults in the files cnnlab writes and reads: a full disk during a results append, an export or
a checkpoint save (simulated by writes that stop part-way, and on a real small tmpfs where the
test runs as root and can mount one), read-only places, the user's umask, and checkpoints that
are empty, foreign, incomplete or for another model. Each gives one line naming the file, and
nothing already written is lost."""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import cnnlab.cli.eval  # noqa: F401  (registers `eval`)
from cnnlab import checkpoint, results
from cnnlab.cli.app import guarded
from cnnlab.cli.main import app
from cnnlab.errors import CnnlabError
from cnnlab.evaluation import runs
from cnnlab.export import export
from conftest import tiny

runner = CliRunner()
ENOSPC = os.strerror(errno.ENOSPC)


class FullDisk:
    """Writes of files under `root` succeed until `budget` bytes have been written, then one write
    stores what still fits and fails with ENOSPC, as a filling disk does. Covers os.write on
    descriptors opened under root and the file objects `open` returns for them; budget=None frees
    the disk."""

    def __init__(self, root: Path, monkeypatch):
        self.root = str(root)
        self.budget = None
        self.fds: set[int] = set()
        self._os_open, self._os_write, self._os_close = os.open, os.write, os.close
        self._open = builtins.open
        monkeypatch.setattr(os, "open", self.os_open)
        monkeypatch.setattr(os, "write", self.os_write)
        monkeypatch.setattr(os, "close", self.os_close)
        monkeypatch.setattr(builtins, "open", self.open)

    def _under(self, path) -> bool:
        return isinstance(path, (str, os.PathLike)) and os.path.abspath(path).startswith(self.root)

    def _take(self, n: int) -> int:
        """How many of n bytes fit; raises ENOSPC when none does."""
        if self.budget is None:
            return n
        if self.budget == 0 and n > 0:
            raise OSError(errno.ENOSPC, ENOSPC)
        fits = min(n, self.budget)
        self.budget -= fits
        return fits

    def os_open(self, path, flags, *args, **kwargs):
        fd = self._os_open(path, flags, *args, **kwargs)
        if self._under(path) and flags & (os.O_WRONLY | os.O_RDWR):
            self.fds.add(fd)
        return fd

    def os_close(self, fd):
        self.fds.discard(fd)
        return self._os_close(fd)

    def os_write(self, fd, data):
        if fd not in self.fds:
            return self._os_write(fd, data)
        fits = self._take(len(data))
        return self._os_write(fd, bytes(data[:fits]))

    def open(self, file, mode="r", *args, **kwargs):
        f = self._open(file, mode, *args, **kwargs)
        if self._under(file) and any(c in mode for c in "wax+"):
            return _Limited(f, self)
        return f


class _Limited:
    """A file object whose writes draw on a FullDisk's budget."""

    def __init__(self, f, disk: FullDisk):
        self._f, self._disk = f, disk

    def write(self, s):
        data = s.encode("utf-8") if isinstance(s, str) else bytes(s)
        fits = self._disk._take(len(data)) if data else 0
        if fits < len(data):
            self._f.write(s[:fits] if isinstance(s, str) else data[:fits])
            self._f.flush()
            raise OSError(errno.ENOSPC, ENOSPC)
        return self._f.write(s)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)

    def __iter__(self):
        return iter(self._f)


@pytest.fixture
def disk(tmp_path, monkeypatch):
    return FullDisk(tmp_path, monkeypatch)


def _rows(n: int, start: int = 0, **extra):
    return [{"run_id": f"r{i}", "status": "done", "test_acc": 0.5 + i / 100, "note": "n" * 40,
             **extra} for i in range(start, start + n)]


def _no_tmp(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if p.name.endswith(".tmp")]


# --- the results table -----------------------------------------------------------------------

@pytest.mark.parametrize("budget", [0, 7, 30])
@pytest.mark.parametrize("new_column", [False, True], ids=["append", "rewrite"])
def test_a_full_disk_part_way_through_an_append_leaves_the_table_byte_for_byte(
        tmp_path, disk, budget, new_column):
    for row in _rows(3):
        results.append_row(tmp_path, row)
    table = results.table_path(tmp_path)
    before = table.read_bytes()
    row = _rows(1, 3, **({"nan_steps": 0} if new_column else {}))[0]
    disk.budget = budget
    with pytest.raises(CnnlabError, match=rf"cannot append to {table}: no space left on device"):
        results.append_row(tmp_path, row)
    assert table.read_bytes() == before
    assert _no_tmp(tmp_path) == []
    disk.budget = None  # space freed: the next appends land whole, nothing is lost or merged
    results.append_row(tmp_path, row)
    results.append_row(tmp_path, _rows(1, 4)[0])
    df = results.read_table(tmp_path)
    assert df.run_id.tolist() == ["r0", "r1", "r2", "r3", "r4"]
    assert df.test_acc.tolist() == pytest.approx([0.5, 0.51, 0.52, 0.53, 0.54])


def test_each_failed_append_that_adds_a_column_leaves_the_table_as_it_was(tmp_path, disk):
    for row in _rows(2):
        results.append_row(tmp_path, row)
    before = results.table_path(tmp_path).read_bytes()
    disk.budget = 0
    for i in range(3):
        with pytest.raises(CnnlabError, match="no space left on device"):
            results.append_row(tmp_path, {**_rows(1, 2)[0], f"new{i}": i})
        assert results.table_path(tmp_path).read_bytes() == before
    assert _no_tmp(tmp_path) == []


@pytest.mark.parametrize("tail", [b"r9,done,0.", b'r9,done,"a quoted\nvalue', b"r9,done,0.9\r"],
                         ids=["cut-in-a-value", "cut-in-a-quoted-newline", "cut-before-the-lf"])
def test_a_partial_last_row_is_repaired_under_the_lock(tmp_path, capsys, tail):
    """What a writer killed mid-write (or a disk full when the truncate failed too) leaves."""
    for row in _rows(2):
        results.append_row(tmp_path, row)
    table = results.table_path(tmp_path)
    whole = table.read_bytes()
    table.write_bytes(whole + tail)
    results.append_row(tmp_path, _rows(1, 2)[0])
    assert table.read_bytes().startswith(whole)
    assert results.read_table(tmp_path).run_id.tolist() == ["r0", "r1", "r2"]
    aside = tmp_path / "results.csv.partial"
    assert aside.read_bytes() == tail + b"\n"  # set aside, not lost
    err = capsys.readouterr().err
    assert err == (f"warning: {table} ended in a partial row ({len(tail)} bytes, left by an "
                   f"interrupted write); moved it to {aside}\n")


def test_a_last_row_without_its_line_end_is_set_aside_not_lost(tmp_path, capsys):
    """A hand-edited table saved without a final line end: its last row is kept in .partial."""
    table = results.table_path(tmp_path)
    table.write_bytes(b"run_id,status\na,done\nb,done")
    results.append_row(tmp_path, {"run_id": "c", "status": "done"})
    assert results.read_table(tmp_path).run_id.tolist() == ["a", "c"]
    assert (tmp_path / "results.csv.partial").read_bytes() == b"b,done\n"


def test_a_table_that_is_not_utf8_keeps_its_bytes_through_a_rewrite(tmp_path):
    table = results.table_path(tmp_path)
    table.write_bytes(b"run_id,note\r\na,caf\xe9\r\n")  # Latin-1 from a spreadsheet
    results.append_row(tmp_path, {"run_id": "b", "note": "x", "new": 1})
    assert table.read_bytes() == b"run_id,note,new\r\na,caf\xe9,\r\nb,x,1\r\n"


def test_a_table_with_a_blank_first_line_keeps_its_rows(tmp_path):
    table = results.table_path(tmp_path)
    table.write_bytes(b"\r\nrun_id,status\r\na,done\r\n")
    results.append_row(tmp_path, {"run_id": "b", "status": "done", "new": 1})
    assert results.read_table(tmp_path).run_id.tolist() == ["a", "b"]


def test_a_held_lock_is_one_line_naming_it(tmp_path):
    from filelock import FileLock

    table = results.table_path(tmp_path)
    with FileLock(str(table) + ".lock"):
        with pytest.raises(CnnlabError, match=rf"^cannot append to {table}: {table}.lock is held "
                                              r"by another process \(waited 0.1 s\)$"):
            results.append_row(tmp_path, {"run_id": "a"}, timeout=0.1)


def test_a_table_that_is_a_folder_is_one_line(tmp_path):
    results.table_path(tmp_path).mkdir()
    with pytest.raises(CnnlabError, match=rf"^{tmp_path}/results.csv is not a regular file; "):
        results.append_row(tmp_path, {"run_id": "a"})


def test_a_table_with_only_part_of_its_header_is_started_again(tmp_path, capsys):
    table = results.table_path(tmp_path)
    table.write_bytes(b"run_id,sta")
    results.append_row(tmp_path, _rows(1)[0])
    assert results.read_table(tmp_path).run_id.tolist() == ["r0"]
    assert "partial row" in capsys.readouterr().err


def test_quoted_values_with_newlines_are_not_taken_for_a_partial_row(tmp_path, capsys):
    results.append_row(tmp_path, {"run_id": "a", "note": 'two\nlines, "quoted"'})
    results.append_row(tmp_path, {"run_id": "b", "note": "x\r\ny"})
    results.append_row(tmp_path, {"run_id": "c", "note": ""})
    df = results.read_table(tmp_path)
    assert df.run_id.tolist() == ["a", "b", "c"] and df.note[0] == 'two\nlines, "quoted"'
    assert capsys.readouterr().err == ""


@contextlib.contextmanager
def _tmpfs(path: Path, options: str):
    """A real tmpfs at `path`; skips the test unless this process may mount one (root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def test_the_table_survives_a_real_full_disk(tmp_path):
    with _tmpfs(tmp_path / "disk", "size=32k") as outputs:
        filler = outputs / "filler"
        filler.write_bytes(b"\0" * 8192)
        table = results.table_path(outputs)
        done, failures = [], 0
        for i in range(30):  # rows of 1.5 kB, some adding a column, until the disk is full
            before = table.read_bytes() if table.exists() else None
            row = {"run_id": f"r{i}", "payload": "x" * 1500, **({f"c{i}": i} if i % 5 == 4 else {})}
            try:
                results.append_row(outputs, row)
                done.append(f"r{i}")
            except CnnlabError as exc:
                failures += 1
                assert str(exc) == f"cannot append to {table}: no space left on device"
                assert table.read_bytes() == before
                assert _no_tmp(outputs) == []
        assert failures > 0 and len(done) > 3
        filler.unlink()  # space freed: the next append lands whole
        kept = table.read_bytes()
        results.append_row(outputs, {"run_id": "last", "payload": "y"})
        assert table.read_bytes().startswith(kept)
        assert results.read_table(outputs).run_id.tolist() == done + ["last"]


def test_an_unwritable_table_is_one_line_naming_it(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(CnnlabError, match=rf"cannot append to {not_a_folder}/results.csv: "):
        results.append_row(not_a_folder, _rows(1)[0])


# --- atomic writes and permissions -----------------------------------------------------------

@pytest.fixture
def small_pt(tmp_path):
    path = tmp_path / "small.pt"
    checkpoint.save({"model": torch.nn.Linear(3, 2).state_dict(), "epoch": 1}, path)
    return path


@pytest.mark.parametrize("budget", [0, 10, 200])
def test_a_full_disk_during_export_keeps_the_old_export_and_leaves_no_tmp(
        tmp_path, small_pt, disk, budget):
    out = export(small_pt)
    before = out.read_bytes()
    disk.budget = budget
    with pytest.raises(CnnlabError, match=rf"cannot write {out}: no space left on device"):
        export(small_pt)
    assert out.read_bytes() == before and _no_tmp(tmp_path) == []


@pytest.mark.parametrize("budget", [0, 10, 200])
def test_a_full_disk_during_a_checkpoint_save_keeps_the_old_file_and_leaves_no_tmp(
        tmp_path, small_pt, disk, budget):
    before = small_pt.read_bytes()
    disk.budget = budget
    with pytest.raises(CnnlabError, match=rf"cannot save checkpoint {small_pt}: No space left"):
        checkpoint.save({"model": {"w": torch.zeros(100)}}, small_pt)
    assert small_pt.read_bytes() == before and _no_tmp(tmp_path) == []


def test_an_export_on_a_real_full_disk_leaves_no_tmp(tmp_path, small_pt):
    with _tmpfs(tmp_path / "disk", "size=8k") as folder:
        (folder / "filler").write_bytes(b"\0" * 6000)
        with pytest.raises(CnnlabError, match="no space left on device"):
            export(small_pt, out=folder / "model.safetensors")
        assert sorted(p.name for p in folder.iterdir()) == ["filler"]


def test_a_checkpoint_save_on_a_real_full_disk_keeps_the_old_file(tmp_path):
    with _tmpfs(tmp_path / "disk", "size=16k") as folder:
        path = checkpoint.save({"model": {"w": torch.zeros(10)}}, folder / "last.pt")
        before = path.read_bytes()
        with pytest.raises(CnnlabError, match=rf"cannot save checkpoint {path}: "):
            checkpoint.save({"model": {"w": torch.zeros(20000)}}, path)
        assert path.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["last.pt"]


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)],
                         ids=["022", "077", "002"])
def test_files_are_written_with_the_users_umask(tmp_path, mask, mode):
    with _umask(mask):
        ckpt = checkpoint.save({"model": {"w": torch.zeros(2)}}, tmp_path / "c.pt")
        checkpoint.save({"model": {"w": torch.ones(2)}}, ckpt)  # a replaced file too
        exported = export(ckpt)
        export(ckpt)
        results.append_row(tmp_path, {"run_id": "a"})
        results.append_row(tmp_path, {"run_id": "b", "new": 1})  # the rewrite path
    for path in (ckpt, exported, results.table_path(tmp_path)):
        assert path.stat().st_mode & 0o777 == mode, path


# --- checkpoints that are not what they should be ---------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch lenet5 run on digits."""
    from cnnlab.training.recipe import train

    out = tmp_path_factory.mktemp("trained")
    s = train(tiny("data=digits", "model=lenet5", "trainer.epochs=1", f"outputs={out}"))
    return Path(s["path"])


@pytest.fixture
def run_copy(trained, tmp_path):
    """A copy of the trained run, marked interrupted so that `cnnlab resume` takes it."""
    run = tmp_path / "runs" / trained.name
    shutil.copytree(trained, run)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}))
    return run


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, result.output
    return errors[0][len("error: "):]


def _cli(*args) -> str:
    return _one_error_line(runner.invoke(app, [str(a) for a in args]))


def _empty_all(run: Path) -> None:
    for name in ("best.pt", "last.pt"):
        (run / "checkpoints" / name).write_bytes(b"")


@pytest.mark.parametrize("command", ["export-file", "export-run", "eval", "resume"])
def test_a_zero_byte_checkpoint_is_named(run_copy, command):
    _empty_all(run_copy)
    ckpts = run_copy / "checkpoints"
    if command == "export-file":
        line, named = _cli("export", ckpts / "last.pt"), ckpts / "last.pt"
    elif command == "export-run":
        line, named = _cli("export", run_copy), ckpts / "best.pt"
    elif command == "eval":
        line, named = _cli("eval", run_copy), ckpts / "best.pt"
    else:
        line, named = _cli("resume", run_copy), ckpts / "last.pt"
    assert line == f"{named}: not a cnnlab checkpoint (0 bytes)"


def _garbage(kind: str, path: Path, real: Path) -> None:
    if kind == "passwd":
        path.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/bin/false\n")
    elif kind == "json":
        path.write_text('{"model": {}}\n')
    elif kind == "random":
        path.write_bytes(bytes(range(256)) * 4)
    elif kind == "truncated":
        path.write_bytes(real.read_bytes()[:2000])
    elif kind == "list":
        torch.save([1, 2, 3], path)
    elif kind == "folder":
        path.mkdir()


@pytest.mark.parametrize("kind", ["passwd", "json", "random", "truncated", "list"])
def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, trained, kind):
    path = tmp_path / "weights.pt"
    _garbage(kind, path, trained / "checkpoints" / "last.pt")
    line = _cli("export", path)
    assert line.startswith(f"{path}: not a cnnlab checkpoint (") and "\n" not in line, line
    with pytest.raises(CnnlabError, match=rf"^{path}: not a cnnlab checkpoint \("):
        checkpoint.load(path)


def test_etc_passwd_given_to_export_is_named():
    if not Path("/etc/passwd").is_file():
        pytest.skip("no /etc/passwd here")
    assert _cli("export", "/etc/passwd").startswith("/etc/passwd: not a cnnlab checkpoint (")


def test_a_pickle_that_would_run_code_is_still_refused_as_such(tmp_path):
    import pickle

    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"model": os.system}, f)
    with pytest.raises(CnnlabError, match="refusing to load .* could run code"):
        checkpoint.load(path)


def _drop_model(path: Path) -> None:
    state = dict(checkpoint.load(path))
    del state["model"]
    torch.save(state, path)


@pytest.mark.parametrize("command", ["eval", "export", "resume"])
def test_a_checkpoint_without_model_weights_is_named(run_copy, command):
    for name in ("best.pt", "last.pt"):
        _drop_model(run_copy / "checkpoints" / name)
    named = run_copy / "checkpoints" / ("last.pt" if command == "resume" else "best.pt")
    assert _cli(command, run_copy) == f"{named}: checkpoint has no 'model' weights"


def test_a_checkpoint_missing_a_key_names_the_file_and_the_key(small_pt):
    state = checkpoint.load(small_pt)
    with pytest.raises(CnnlabError, match=rf"^{small_pt}: checkpoint has no 'optimizer'$"):
        state["optimizer"]
    assert state.get("optimizer") is None and "model" in state


def _misfit(path: Path) -> None:
    """lenet5's weights with its first four tensors missing, one misshapen and one foreign."""
    state = dict(checkpoint.load(path))
    weights = dict(state["model"])
    missing = list(weights)[:4]
    for key in missing:
        del weights[key]
    shaped = list(weights)[0]
    weights[shaped] = torch.zeros(7, 7)
    weights["extra.weight"] = torch.zeros(1)
    torch.save({**state, "model": weights}, path)
    return missing, shaped


def test_weights_that_do_not_fit_the_model_name_the_file_and_the_keys(run_copy):
    best = run_copy / "checkpoints" / "best.pt"
    missing, shaped = _misfit(best)
    line = _cli("eval", run_copy)
    assert line.startswith(f"{best}: weights do not fit model lenet5: missing {missing[0]}, "
                           f"{missing[1]}, {missing[2]} (1 more); unexpected extra.weight; "), line
    assert f"{shaped} is 7x7 in the file" in line


def test_fit_weights_lists_at_most_a_few_keys():
    net = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(6)])
    with pytest.raises(CnnlabError, match=r"^x\.pt: weights do not fit model mlp: missing 0\.weight, "
                                          r"0\.bias, 1\.weight \(9 more\)$"):
        checkpoint.fit_weights(net, {}, "x.pt", "mlp")
    checkpoint.fit_weights(net, net.state_dict(), "x.pt", "mlp")


def test_resume_with_weights_that_do_not_fit_names_the_file_and_the_keys(run_copy):
    last = run_copy / "checkpoints" / "last.pt"
    missing, _ = _misfit(last)
    line = _cli("resume", run_copy)
    assert line.startswith(f"{last}: weights do not fit model ") and f"missing {missing[0]}, " in line


# --- unwritable places ------------------------------------------------------------------------

def test_export_into_a_place_that_cannot_be_written_is_one_line(tmp_path, small_pt):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "model.safetensors"
    assert _cli("export", small_pt, "--out", out) == f"cannot write {out}: not a directory"


def test_export_into_a_read_only_folder_is_one_line(tmp_path, small_pt):
    with _tmpfs(tmp_path / "ro", "size=8k,ro") as folder:
        out = folder / "model.safetensors"
        assert _cli("export", small_pt, "--out", out) == f"cannot write {out}: read-only file system"


def test_os_errors_reaching_the_guard_name_their_file(tmp_path):
    @guarded
    def full(filename):
        raise OSError(errno.ENOSPC, ENOSPC, *([filename] if filename else []))

    path = tmp_path / "x.csv"
    result = runner.invoke(_one_command(full, str(path)), [])
    assert _one_error_line(result) == f"{path}: no space left on device"
    result = runner.invoke(_one_command(full, None), [])  # without a file: as before
    assert _one_error_line(result).startswith("OSError: [Errno 28] No space left on device")


def _one_command(fn, arg):
    import typer

    one = typer.Typer()

    @one.command()
    def cmd():
        fn(arg)

    return one


@pytest.fixture
def unwritable_outputs(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    return blocker / "outputs"


def test_eval_checks_it_can_write_before_it_evaluates(trained, unwritable_outputs, monkeypatch):
    scored = []
    monkeypatch.setattr(runs, "score_views", lambda *a, **k: scored.append(1) or {})
    with pytest.raises(CnnlabError, match=rf"^cannot append to {unwritable_outputs}/results.csv: "):
        runs.evaluate_run(trained, {"views": ["center"]}, device="cpu", outputs=unwritable_outputs)
    assert scored == []


def test_eval_on_a_read_only_disk_fails_before_it_evaluates(trained, tmp_path, monkeypatch):
    scored = []
    monkeypatch.setattr(runs, "score_views", lambda *a, **k: scored.append(1) or {})
    with _tmpfs(tmp_path / "ro", "size=8k,ro") as folder:
        line = _cli("eval", trained, "--outputs", folder)
        assert line == f"cannot append to {folder}/results.csv: read-only file system"
    assert scored == []


def test_eval_appends_its_row_when_it_can(trained, outputs):
    result = runner.invoke(app, ["eval", str(trained), "--outputs", str(outputs)])
    assert result.exit_code == 0, result.output
    df = pd.read_csv(outputs / "results.csv")
    assert df.status.tolist() == ["eval"] and df.run_id.tolist() == [trained.name]


def test_reading_a_table_with_a_partial_last_row_leaves_it_out(tmp_path, capsys):
    for row in _rows(2):
        results.append_row(tmp_path, row)
    table = results.table_path(tmp_path)
    table.write_bytes(table.read_bytes() + b'r9,done,"cut inside a quoted\nvalue')
    assert results.read_table(tmp_path).run_id.tolist() == ["r0", "r1"]
    assert f"warning: {table} ends in a partial row" in capsys.readouterr().err
    result = runner.invoke(app, ["results", "--outputs", str(tmp_path)])
    assert result.exit_code == 0 and "r1" in result.output, result.output


def test_a_table_pandas_cannot_read_is_one_line_naming_it(tmp_path):
    table = results.table_path(tmp_path)
    table.write_bytes(b"run_id,status\na,done\nb,done,extra,more\n")
    with pytest.raises(CnnlabError, match=rf"^{table}: cannot read the results table \(Error "
                                          r"tokenizing data"):
        results.read_table(tmp_path)
    table.write_bytes(b"")
    assert results.read_table(tmp_path).empty


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_table_that_links_to_a_device_is_refused_not_read_forever(tmp_path):
    table = results.table_path(tmp_path)
    table.symlink_to("/dev/full")  # reads zeros without end; every write fails with ENOSPC
    for call in (lambda: results.append_row(tmp_path, {"run_id": "a"}),
                 lambda: results.check_writable(tmp_path), lambda: results.read_table(tmp_path)):
        with pytest.raises(CnnlabError, match=rf"^{table} is not a regular file"):
            call()


def test_a_table_that_is_a_pipe_is_refused_without_blocking(tmp_path):
    os.mkfifo(results.table_path(tmp_path))
    for call in (lambda: results.append_row(tmp_path, {"run_id": "a"}),
                 lambda: results.check_writable(tmp_path), lambda: results.read_table(tmp_path)):
        with pytest.raises(CnnlabError, match="is not a regular file"):
            call()


@pytest.mark.parametrize("kind", ["empty", "truncated", "passwd"])
def test_resume_names_a_bad_last_pt_before_it_loads_the_data(run_copy, monkeypatch, kind):
    import cnnlab.training.recipe as recipe

    built = []
    monkeypatch.setattr(recipe, "build_parts", lambda *a, **k: built.append(1))
    last = run_copy / "checkpoints" / "last.pt"
    if kind == "empty":
        last.write_bytes(b"")
    else:
        _garbage(kind, last, run_copy / "checkpoints" / "best.pt")
    assert _cli("resume", run_copy).startswith(f"{last}: not a cnnlab checkpoint (")
    assert built == []


def test_export_names_a_summary_json_it_cannot_read(run_copy):
    (run_copy / "summary.json").write_text('{"status": "do')  # cut short
    line = _cli("export", run_copy)
    assert line.startswith(f"{run_copy / 'summary.json'}: not valid JSON (")
