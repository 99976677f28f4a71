"""`gt-remote sync` refuses a tree that holds a live database (Dolt's data directory, SQLite
with its -wal beside it), without a remote: the local walk over a tmp tree, the remote search's
shell script run by a local sh, and the one-line refusal."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path, PurePosixPath

import pytest

from gt_remote.base.config import HostSettings
from gt_remote.commands import sync
from gt_remote.commands.sync import Database, LiveDatabase, Transfer
from gt_remote.remote.scripts import script_text
from tests.conftest import Gt
from tests.helpers import SEQUENCES, assert_no_control, one_error_line

SETTINGS = HostSettings(name="gaming-pc", destination="gaming-pc", local_url="tcp://127.0.0.1:9999")


def touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")


def relative(found: list[Database], root: Path | str) -> list[tuple[str, str]]:
    return [(db.kind, os.path.relpath(db.path, root)) for db in found]


# --- the local walk -----------------------------------------------------------------------


def test_plain_files_hold_no_database(tmp_path: Path) -> None:
    touch(tmp_path, "src.py", "notes/todo.md", ".git/HEAD", "wal", "-wal", "x.db", "x.db-journal", "a-wal/b", "dolt/README", ".dolt.bak/x")
    (tmp_path / "empty.dolt").mkdir()
    assert sync.local_databases(tmp_path) == []


def test_dolt_directories_found_at_any_depth_and_not_entered(tmp_path: Path) -> None:
    touch(tmp_path, "rig/.dolt/noms/manifest", "rig/.dolt/.dolt/inner", "town/.dolt-data/beads/.dolt/noms/manifest", "src.py")
    assert relative(sync.local_databases(tmp_path), tmp_path) == [("dolt", "rig/.dolt"), ("dolt", "town/.dolt-data")]


def test_sqlite_with_its_wal_beside_it_of_any_name(tmp_path: Path) -> None:
    touch(tmp_path, "app.db", "app.db-wal", "deep/er/state", "deep/er/state-wal", "lonely-wal", "closed.db", "closed.db-shm")
    assert relative(sync.local_databases(tmp_path), tmp_path) == [("sqlite", "app.db"), ("sqlite", "deep/er/state")]


def test_the_tree_itself_or_a_directory_above_it_is_dolts(tmp_path: Path) -> None:
    touch(tmp_path, "gt/.dolt-data/beads/.dolt/noms/manifest", "rig/.dolt/noms/manifest")
    assert relative(sync.local_databases(tmp_path / "gt" / ".dolt-data"), tmp_path) == [("dolt", "gt/.dolt-data")]
    assert relative(sync.local_databases(tmp_path / "gt" / ".dolt-data" / "beads"), tmp_path) == [("dolt", "gt/.dolt-data")]
    assert relative(sync.local_databases(tmp_path / "rig" / ".dolt" / "noms" / "manifest"), tmp_path) == [("dolt", "rig/.dolt")]


def test_a_single_file_sent_with_its_wal_beside_it(tmp_path: Path) -> None:
    touch(tmp_path, "app.db", "app.db-wal", "plain.txt", "orphan-wal")
    for sent in ("app.db", "app.db-wal"):
        assert relative(sync.local_databases(tmp_path / sent), tmp_path) == [("sqlite", "app.db")]
    assert sync.local_databases(tmp_path / "plain.txt") == [] and sync.local_databases(tmp_path / "orphan-wal") == []


def test_links_are_not_followed(tmp_path: Path) -> None:
    """rsync --archive copies a link as a link: a link to a database copies no database."""
    touch(tmp_path, "elsewhere/.dolt/noms/manifest", "elsewhere/app.db", "elsewhere/app.db-wal")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "linked").symlink_to(tmp_path / "elsewhere")
    (tree / ".dolt").symlink_to(tmp_path / "elsewhere" / ".dolt")
    (tree / "app.db").symlink_to(tmp_path / "elsewhere" / "app.db")
    (tree / "app.db-wal").symlink_to(tmp_path / "elsewhere" / "app.db-wal")
    assert sync.local_databases(tree) == []
    top = tmp_path / "top"
    top.symlink_to(tmp_path / "elsewhere")  # the path named itself: rsync copies what `top/` holds
    assert relative(sync.local_databases(top), top) == [("dolt", ".dolt"), ("sqlite", "app.db")]


def test_the_walk_stops_after_the_first_finds(tmp_path: Path) -> None:
    for index in range(10):
        touch(tmp_path, f"r{index}/.dolt/manifest", f"r{index}/data.db", f"r{index}/data.db-wal")
    found = sync.local_databases(tmp_path)
    assert len(found) == sync.FINDS_SHOWN + 1
    assert relative(found, tmp_path)[:2] == [("dolt", "r0/.dolt"), ("sqlite", "r0/data.db")]


def test_an_unreadable_directory_is_left_to_rsync(tmp_path: Path) -> None:
    touch(tmp_path, "locked/secret", "open/.dolt/manifest")
    (tmp_path / "locked").chmod(0)
    try:
        assert relative(sync.local_databases(tmp_path), tmp_path) == [("dolt", "open/.dolt")]
    finally:
        (tmp_path / "locked").chmod(0o700)


# --- the refusal --------------------------------------------------------------------------


def test_a_push_is_refused_naming_the_database_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    touch(tmp_path, "gt/.dolt-data/beads/.dolt/manifest", "gt/rig/src.py")
    transfers = sync.plan([str(tmp_path / "gt" / "rig"), str(tmp_path / "gt")], home=tmp_path)
    with pytest.raises(LiveDatabase) as refused:
        sync.refuse_live_databases(SETTINGS, transfers, push=True)
    assert str(refused.value) == (
        "refusing to sync ~/gt: it holds a live database (.dolt-data/ at ~/gt/.dolt-data; copying a running database's files corrupts it); "
        "beads live in the town's Dolt server and reach gaming-pc through the back tunnel ('gt-remote up gaming-pc --back dolt'); "
        "sync a path without it, or stop the database and pass --force to copy it anyway"
    )
    assert refused.value.exit_code == 1
    sync.refuse_live_databases(SETTINGS, transfers[:1], push=True)  # the rig alone holds none


def test_the_refusal_names_a_few_and_says_there_are_more(tmp_path: Path) -> None:
    found = [Database("sqlite", f"/srv/x/{name}.db") for name in "abcd"]
    error = sync.refusal("my pc", "/srv/x", found, sync.shown_remote, pulling=True)
    assert error.cause == (
        "refusing to sync /srv/x from my pc: it holds a live database there (a.db with a.db-wal at /srv/x/a.db, b.db with b.db-wal at /srv/x/b.db, "
        "c.db with c.db-wal at /srv/x/c.db, and more; copying a running database's files corrupts it)"
    )
    assert error.fix == "sync a path without it, or stop the program that writes it and pass --force to copy it anyway"
    dolt = sync.refusal("my pc", "~/gt", [Database("dolt", "gt/.dolt")], sync.shown_remote, pulling=True)
    assert "('gt-remote up 'my pc' --back dolt')" in dolt.fix and "(.dolt/ at ~/gt/.dolt;" in dolt.cause


def test_the_far_sides_names_are_shown_as_text() -> None:
    error = sync.refusal("pc", "~/gt", [Database("dolt", f"gt/{SEQUENCES}/.dolt")], sync.shown_remote, pulling=True)
    assert_no_control(str(error))


def test_a_pull_of_a_dolt_directory_is_refused_by_its_name_with_no_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_search(*args: object) -> list[Database]:
        raise AssertionError("no remote search needed")

    monkeypatch.setattr(sync, "remote_databases", no_search)
    monkeypatch.setenv("HOME", str(tmp_path))
    transfers = sync.plan([str(tmp_path / "gt" / ".dolt-data" / "beads")], home=tmp_path)
    with pytest.raises(LiveDatabase, match=r"refusing to sync ~/gt/\.dolt-data/beads from gaming-pc: it holds a live database there \(\.dolt-data/ at ~/gt/\.dolt-data;"):
        sync.refuse_live_databases(SETTINGS, transfers, push=False)


def test_a_pull_names_the_path_that_holds_the_find(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sync, "remote_databases", lambda settings, transfers: [Database("sqlite", "b/state.db")])
    transfers = sync.plan([str(tmp_path / "a"), str(tmp_path / "b")], home=tmp_path)
    with pytest.raises(LiveDatabase, match=r"^refusing to sync ~/b from gaming-pc: it holds a live database there \(state\.db with state\.db-wal at ~/b/state\.db;"):
        sync.refuse_live_databases(SETTINGS, transfers, push=False)


def test_force_skips_the_check_and_a_refused_push_starts_no_rsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path, "rig/.dolt/manifest")
    started: list[list[str]] = []
    monkeypatch.setattr(sync, "_rsync", lambda command, settings, drop=None: started.append(command))
    with pytest.raises(LiveDatabase):
        sync.run(SETTINGS, [str(tmp_path / "rig")], push=True, dry_run=True, delete=False, out=lambda line: None)
    assert started == []
    sync.run(SETTINGS, [str(tmp_path / "rig")], push=True, dry_run=False, delete=False, out=lambda line: None, force=True)
    assert len(started) == 1


def test_the_cli_refuses_with_one_line_and_exit_1(gt: Gt) -> None:
    """Before any connection: the host need not exist."""
    touch(gt.home, "gt/rig/.dolt/manifest")
    result = gt("sync", "no-such-host.invalid", "--push", str(gt.home / "gt" / "rig"))
    assert result.returncode == 1 and result.stdout == ""
    assert one_error_line(result.stderr) == (
        "gt-remote: error: refusing to sync ~/gt/rig: it holds a live database (.dolt/ at ~/gt/rig/.dolt; copying a running database's files corrupts it); "
        "beads live in the town's Dolt server and reach no-such-host.invalid through the back tunnel ('gt-remote up no-such-host.invalid --back dolt'); "
        "sync a path without it, or stop the database and pass --force to copy it anyway"
    )


# --- the remote search, run by a local sh ---------------------------------------------------


def remote_search(home: Path, paths: list[str]) -> list[Database]:
    """REMOTE_SEARCH as run_script sends it (arguments quoted, prelude, no marker), with `home`
    as the remote home."""
    transfers = [Transfer(home / path, path, True) for path in paths]
    text = script_text(sync.REMOTE_SEARCH, tuple(sync.remote_arguments(transfers)))
    result = subprocess.run(["sh", "-s"], input=text, capture_output=True, text=True, env={"HOME": str(home), "PATH": os.environ["PATH"]}, cwd="/", timeout=30)
    assert result.returncode == 0, result.stderr
    return sync.parse_remote_databases(result.stdout)


def test_the_remote_search_finds_what_the_local_walk_finds(tmp_path: Path) -> None:
    touch(tmp_path, "gt/rig/.dolt/noms/manifest", "gt/rig/.dolt/.dolt/x", "gt/rig/src.py", "gt/rig/sub/app.db", "gt/rig/sub/app.db-wal", "gt/rig/lonely-wal")
    (tmp_path / "gt" / "rig" / "link").symlink_to(tmp_path / "elsewhere")
    touch(tmp_path, "elsewhere/.dolt-data/x", "elsewhere/y.db", "elsewhere/y.db-wal")
    found = remote_search(tmp_path, ["gt/rig"])
    assert sorted((db.kind, db.path) for db in found) == [("dolt", "gt/rig/.dolt"), ("sqlite", "gt/rig/sub/app.db")]
    assert sorted(relative(sync.local_databases(tmp_path / "gt" / "rig"), tmp_path)) == sorted((db.kind, db.path) for db in found)


def test_the_remote_search_takes_odd_names_as_paths(tmp_path: Path) -> None:
    """Quoted by run_script and given as ./PATH: spaces, quotes, `$(...)` and a leading dash stay one path."""
    odd = ["-name x", "it's $(touch pwned) `rm -rf .`", 'a"b']
    for name in odd:
        touch(tmp_path, f"{name}/.dolt-data/x")
    found = remote_search(tmp_path, [*odd, "absent"])
    assert sorted(db.path for db in found) == sorted(f"{name}/.dolt-data" for name in odd)
    assert not (tmp_path / "pwned").exists() and (tmp_path / odd[1]).is_dir()


def test_the_remote_search_of_a_file_and_an_absolute_path(tmp_path: Path) -> None:
    touch(tmp_path, "notes/app.db", "notes/app.db-wal", "notes/plain.txt", "srv/.dolt/x")
    assert [(db.kind, db.path) for db in remote_search(tmp_path, ["notes/app.db"])] == [("sqlite", "notes/app.db")]
    assert remote_search(tmp_path, ["notes/plain.txt"]) == []
    assert [(db.kind, db.path) for db in remote_search(tmp_path, [str(tmp_path / "srv")])] == [("dolt", str(tmp_path / "srv" / ".dolt"))]


def test_the_remote_search_stops_after_the_first_finds(tmp_path: Path) -> None:
    for index in range(10):
        touch(tmp_path, f"t/r{index}/.dolt/x")
    assert len(remote_search(tmp_path, ["t"])) == sync.FINDS_SHOWN + 1


def test_remote_lines_that_are_not_finds_are_ignored() -> None:
    assert sync.parse_remote_databases("banner=1\ndolt=./gt/.dolt\nsqlite=\nsqlite=/a.db\nnoise\n") == [Database("dolt", "gt/.dolt"), Database("sqlite", "/a.db")]
    assert sync.dolt_above(PurePosixPath("gt/.dolt-data/beads")) == Database("dolt", "gt/.dolt-data")
