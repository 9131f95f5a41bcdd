"""The style store: the same tests on SQLite (a file) and PostgreSQL (a real server, tests/postgres_fixtures.py)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
import torch

from adain import ops
from adain.errors import InputError
from service.store import open_store
from service.store.interface import Access, NewStyle, QuotaExceeded, StyleStore
from service.store.sql import MIGRATIONS, SQLStyleStore, styles

from .postgres_fixtures import _free_port, new_database


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty store's URL (a new SQLite file, or a new database on the test server)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'styles.db'}"
    return new_database(request.getfixturevalue("postgres_server"))


def new_style(name: str, seed: int = 0, keys: tuple[str, ...] = ("enc/64/none", "enc/64/luminance")) -> NewStyle:
    g = torch.Generator().manual_seed(seed)
    image = bytes(torch.randint(0, 256, (1000 + seed,), generator=g, dtype=torch.uint8).tolist())
    stats = {k: ops.Stats(torch.rand(512, generator=g), torch.rand(512, generator=g) + 0.1) for k in keys}
    return NewStyle(name, 40 + seed, 30 + seed, image, b"thumb-" + name.encode(), stats)


def table_rows(store: StyleStore, table: sa.Table) -> list[sa.Row]:
    with store._engine.connect() as conn:
        return list(conn.execute(sa.select(table)))


def test_round_trip_persistence_and_delete(store_url: str) -> None:
    store = open_store(store_url)
    styles = [new_style("starry night", 1), new_style("wave", 2, keys=())]
    infos = [store.add(s) for s in styles]
    assert len({i.id for i in infos}) == 2 and all(len(i.id) == 16 for i in infos)
    assert store.list() == infos  # oldest first
    for info, style in zip(infos, styles, strict=True):
        assert (info.name, info.width, info.height, info.bytes) == (style.name, style.width, style.height,
                                                                    len(style.image))
        assert info.created.endswith("Z") and store.get(info.id) == info
        assert store.image(info.id) == style.image and store.thumbnail(info.id) == style.thumbnail
    for key, expected in styles[0].stats.items():
        got = store.stats(infos[0].id, key)
        assert torch.equal(got.mean, expected.mean) and torch.equal(got.std, expected.std)
        assert got.mean.dtype == torch.float32 and got.mean.device.type == "cpu"
    assert store.stats(infos[0].id, "other/64/none") is None and store.stats(infos[1].id, "enc/64/none") is None
    for missing in (store.get, store.image, store.thumbnail):
        assert missing("0123456789abcdef") is None
    assert store.delete(infos[0].id) and not store.delete(infos[0].id)
    assert store.list() == infos[1:] and store.stats(infos[0].id, "enc/64/none") is None
    from service.store.sql import style_stats

    assert table_rows(store, style_stats) == []  # the statistics went with their style
    store.close()

    again = open_store(store_url)  # a restart: the schema is there already, the data too
    assert isinstance(again, SQLStyleStore) and again.version == len(MIGRATIONS)
    assert again.list() == infos[1:] and again.image(infos[1].id) == styles[1].image
    from service.store.sql import schema_version

    assert [row.version for row in table_rows(again, schema_version)] == list(range(1, len(MIGRATIONS) + 1))
    again.close()


def test_threads_share_one_store(store_url: str) -> None:
    store = open_store(store_url)
    ids: list[str] = []

    def add(t: int) -> None:
        for i in range(5):
            info = store.add(new_style(f"t{t}-{i}", t * 10 + i))
            assert store.get(info.id) == info and store.stats(info.id, "enc/64/none") is not None
            ids.append(info.id)

    threads = [threading.Thread(target=add, args=(t,)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(ids) == sorted(i.id for i in store.list()) and len(set(ids)) == 30
    store.close()


def _add_from_process(url: str, tag: str, count: int, barrier: threading.Barrier) -> None:
    """In a child process: wait for the other one, open the store (the first open creates the schema), add."""
    barrier.wait(timeout=60)
    store = open_store(url)
    for i in range(count):
        store.add(new_style(f"{tag}-{i}", i))
    store.close()


def test_two_processes_store_concurrently_and_nothing_is_lost(store_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    count = 15
    procs = [ctx.Process(target=_add_from_process, args=(store_url, tag, count, barrier)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    store = open_store(store_url)
    infos = store.list()
    assert sorted(i.name for i in infos) == sorted(f"{tag}-{i}" for tag in "ab" for i in range(count))
    assert len({i.id for i in infos}) == 2 * count
    for info in infos:
        i = int(info.name.split("-")[1])
        assert store.image(info.id) == new_style(info.name, i).image
        assert torch.equal(store.stats(info.id, "enc/64/none").mean, new_style(info.name, i).stats["enc/64/none"].mean)
    from service.store.sql import schema_version

    assert len(table_rows(store, schema_version)) == len(MIGRATIONS)  # the schema was made once
    store.close()


def test_new_sqlite_files_opened_by_many_at_once_all_open(tmp_path: Path) -> None:
    """Switching a new file to WAL races for its exclusive lock; SQLite fails the loser at once, without busy_timeout.

    Before the store retried that switch, about one new file in 16 failed an opener here, so 80 files catch it.
    """
    failures: list[BaseException] = []
    for n in range(80):
        path, start = tmp_path / f"s{n}.db", threading.Barrier(8)

        def open_and_close(path: Path = path, start: threading.Barrier = start) -> None:
            start.wait(timeout=30)
            try:
                SQLStyleStore(path=path).close()
            except InputError as exc:
                failures.append(exc)

        threads = [threading.Thread(target=open_and_close) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert failures == []


def test_a_newer_schema_is_refused(store_url: str) -> None:
    store = open_store(store_url)
    from service.store.sql import schema_version

    with store._engine.begin() as conn:
        conn.execute(schema_version.insert().values(version=99, applied="2099-01-01T00:00:00.000Z"))
    store.close()
    with pytest.raises(InputError, match="schema version 99"):
        open_store(store_url)


def test_a_sqlite_file_of_earlier_versions_is_adopted(tmp_path: Path) -> None:
    """Files written before the store moved to SQLAlchemy (no schema_version table) open as they are."""
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE styles (id TEXT PRIMARY KEY, name TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
            bytes INTEGER NOT NULL, created TEXT NOT NULL, image BLOB NOT NULL, thumbnail BLOB NOT NULL);
        CREATE TABLE style_stats (style_id TEXT NOT NULL REFERENCES styles(id) ON DELETE CASCADE, key TEXT NOT NULL,
            mean BLOB NOT NULL, std BLOB NOT NULL, PRIMARY KEY (style_id, key));
        INSERT INTO styles VALUES ('00112233aabbccdd', 'old', 3, 2, 4, '2026-01-02T03:04:05.678Z', x'01020304', x'ff');
        INSERT INTO style_stats VALUES ('00112233aabbccdd', 'k', x'0000803f', x'00000040');
    """)
    db.close()
    store = open_store(str(path))
    assert store.version == len(MIGRATIONS)
    assert [i.name for i in store.list()] == ["old"] and store.image("00112233aabbccdd") == b"\1\2\3\4"
    stats = store.stats("00112233aabbccdd", "k")
    assert stats.mean.tolist() == [1.0] and stats.std.tolist() == [2.0]
    assert store.delete("00112233aabbccdd") and store.stats("00112233aabbccdd", "k") is None
    store.close()


def test_unreachable_or_bad_urls_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        open_store(f"postgresql://adain:s3cret@127.0.0.1:{_free_port()}/styles")
    assert "cannot open the style store" in str(caught.value) and "s3cret" not in str(caught.value)
    for url in ("mysql://db/adain", "sqlite://no-slash.db", "postgresql://host:notaport/db"):
        with pytest.raises(InputError):
            open_store(url)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(InputError, match="cannot open"):
        open_store(str(blocker / "styles.db"))
    assert os.listdir(tmp_path) == ["file"]


def test_a_wal_file_of_earlier_versions_moves_to_a_rollback_journal(tmp_path: Path) -> None:
    """Earlier versions kept SQLite in WAL mode, whose memory-mapped index (-shm) could kill the process (SIGBUS)."""
    path = tmp_path / "old.db"
    store = open_store(str(path))
    info = store.add(new_style("kept", 1))
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    db.close()
    store = open_store(str(path))
    assert store.list() == [info]
    with store._engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "delete"
        assert conn.exec_driver_sql("PRAGMA mmap_size").scalar() == 0
    store.add(new_style("new", 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db", "old.db.reserve"]  # no -wal, no -shm
    store.close()


def test_a_version_1_store_gains_owners_without_losing_styles(store_url: str) -> None:
    """Version 2 adds the owner and public columns: existing styles keep everything, belong to no key."""
    v1 = sa.MetaData()
    sa.Table("styles", v1, *(sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                             for c in styles.columns if c.name not in ("owner", "public")))
    sa.Table("schema_version", v1, sa.Column("version", sa.Integer, primary_key=True), sa.Column("applied", sa.Text))
    url = store_url.replace("postgresql://", "postgresql+psycopg://")
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        v1.create_all(conn)
        conn.execute(v1.tables["schema_version"].insert().values(version=1, applied="2026-01-01T00:00:00.000Z"))
        conn.execute(v1.tables["styles"].insert().values(id="00112233aabbccdd", name="old", width=3, height=2,
                                                         bytes=4, created="2026-01-02T03:04:05.678Z",
                                                         image=b"\1\2\3\4", thumbnail=b"t"))
    engine.dispose()
    store = open_store(store_url)
    assert store.version == len(MIGRATIONS) == 2
    assert [(i.id, i.name, i.public) for i in store.list()] == [("00112233aabbccdd", "old", False)]
    assert store.scoped(Access("alice", admin=False)).list() == []  # ownerless: admin keys only
    assert store.set_public("00112233aabbccdd", True).public
    assert [i.name for i in store.scoped(Access("alice", admin=False)).list()] == ["old"]
    store.close()


def test_views_see_their_own_and_public_styles_and_keep_to_quotas(store_url: str) -> None:
    store = open_store(store_url)
    alice = store.scoped(Access("alice", admin=False, max_styles=2, max_bytes=5000))
    bob = store.scoped(Access("bob", admin=False))
    mine = alice.add(new_style("a", 1))
    assert bob.list() == [] and bob.get(mine.id) is None and bob.image(mine.id) is None
    assert bob.thumbnail(mine.id) is None and bob.stats(mine.id, "enc/64/none") is None
    assert not bob.delete(mine.id) and bob.set_public(mine.id, True) is None
    assert store.set_public(mine.id, True).public  # the unscoped store is the admin's view
    assert [i.id for i in bob.list()] == [mine.id] and bob.stats(mine.id, "enc/64/none") is not None
    assert not bob.delete(mine.id)
    alice.add(new_style("b", 2))
    with pytest.raises(QuotaExceeded, match="2 styles"):
        alice.add(new_style("c", 3))
    big = store.scoped(Access("carol", admin=False, max_bytes=1500))
    big.add(new_style("d", 4))
    with pytest.raises(QuotaExceeded, match="bytes"):
        big.add(new_style("e", 5))
    assert len(store.list()) == 3 and alice.delete(mine.id) and len(store.list()) == 2
    store.close()
