"""The wheel installs anywhere: built from the tree, installed into a fresh venv outside it.

An editable install reads Lua scripts and SQL from the checkout, so it hides a
wheel that lacks them. Here the wheel is built from a copy of the tree (the
files git tracks or would track), installed into a new venv in a temporary
folder, and run from there with the checkout nowhere on its path: `tally
migrate` against a fresh database, and one batch through the installed
counting core against a real Redis.

Dependencies come from a local wheelhouse, filled from the package index once
per dependency list (the stamp file records which list it holds), so a run
after the first needs no network and takes a few seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tally.ingest.counting import reads
from tally.ingest.counting.config import CountingConfig

CHECKOUT = Path(__file__).resolve().parent.parent
WHEELHOUSE = Path("/var/cache/tally/wheels")
TABLES = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"


def run(*argv, **kwargs) -> subprocess.CompletedProcess:
    """Run a command, failing the test with its output when it exits non-zero."""
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


def pip(*args, **kwargs) -> subprocess.CompletedProcess:
    """Run the test interpreter's pip quietly."""
    return run(sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", *args, **kwargs)


def requirements() -> list[str]:
    """What building and installing the wheel needs: build-system requires and dependencies."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    return [*project["build-system"]["requires"], *project["project"]["dependencies"]]


def fill_wheelhouse() -> None:
    """Download the requirements' wheels unless the wheelhouse already holds this list."""
    stamp = WHEELHOUSE / "requirements.txt"
    wanted = "\n".join(requirements()) + "\n"
    if stamp.exists() and stamp.read_text() == wanted:
        return
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    pip("download", "--only-binary", ":all:", "-d", str(WHEELHOUSE), *requirements())
    stamp.write_text(wanted)


def copy_tree(target: Path) -> Path:
    """Copy the files git tracks or would track (a clean clone plus work in progress)."""
    listed = run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                 cwd=CHECKOUT).stdout.split("\0")
    for name in filter(None, listed):
        source = CHECKOUT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built offline from a copy of the tree."""
    fill_wheelhouse()
    root = tmp_path_factory.mktemp("wheel")
    source = copy_tree(root / "src")
    pip("wheel", "--no-deps", "--no-index", "--find-links", str(WHEELHOUSE),
        "-w", str(root / "dist"), str(source))
    (built,) = (root / "dist").glob("tally-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with the wheel and its dependencies installed."""
    root = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", "--without-pip", str(root))
    pip("--python", str(root / "bin" / "python"), "install", "--no-index",
        "--find-links", str(WHEELHOUSE), str(wheel))
    return root


@pytest.fixture
def outside(venv, tmp_path) -> dict:
    """Arguments for running a command from the venv, in a folder outside the checkout.

    The environment holds no TALLY_* variable of the caller and no PYTHONPATH.
    """
    env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    return {"cwd": tmp_path, "env": env}


def installed_names(pattern: str) -> set[str]:
    """Where the tree's files matching `pattern` land in the wheel, by pyproject's package-dir."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())
    folders = {folder: package.replace(".", "/") for package, folder
               in project["tool"]["setuptools"]["package-dir"].items()}
    return {f"{folders[folder]}/{path.relative_to(CHECKOUT / folder)}"
            for folder in folders for path in (CHECKOUT / folder).rglob(pattern)}


def test_the_wheel_holds_one_package_with_its_scripts_and_migrations(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {name.split("/")[0] for name in names} == {"tally", "tally-0.1.0.dist-info"}
    lua, sql_files = installed_names("*.lua"), installed_names("*.sql")
    assert "tally/ingest/counting/lua/apply.lua" in lua
    assert "tally/timescale/0001_counts.sql" in sql_files
    assert lua <= names and sql_files <= names


def test_the_installed_package_is_the_one_imported(venv, outside):
    code = "import tally.timescale, tally.ingest.counting as c; print(tally.__file__, c.__file__)"
    files = run(str(venv / "bin" / "python"), "-c", code, **outside).stdout.split()
    assert all(Path(f).is_relative_to(venv) for f in files), files


@pytest.fixture
def fresh_dsn(postgres_superuser_dsn, tmp_path):
    """Superuser DSN (as compose's) of a database that does not exist yet; dropped after."""
    name = f"wheel_{os.getpid()}_{tmp_path.name}".lower().replace("-", "_")[:60]
    yield make_conninfo(postgres_superuser_dsn, dbname=name)
    with psycopg.connect(postgres_superuser_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def test_installed_tally_migrate_builds_the_whole_schema(venv, outside, fresh_dsn, postgres_dsn):
    env = {**outside["env"], "TALLY_POSTGRES_DSN": fresh_dsn, "TALLY_SINKS": "timescale"}
    tally = str(venv / "bin" / "tally")
    first = run(tally, "migrate", cwd=outside["cwd"], env=env).stdout
    names = sorted(p.name for p in CHECKOUT.glob("timescale/*.sql"))
    assert first.strip() == "timescaledb: applied " + ", ".join(names)
    assert run(tally, "migrate", cwd=outside["cwd"], env=env).stdout.strip() == \
        "timescaledb: up to date"
    assert conninfo_to_dict(fresh_dsn)["dbname"] != conninfo_to_dict(postgres_dsn)["dbname"]
    with psycopg.connect(fresh_dsn) as fresh, psycopg.connect(postgres_dsn) as checkout:
        versions = [row[0] for row in fresh.execute(
            "SELECT version FROM tally_migrations ORDER BY version")]
        assert versions == [int(name.split("_")[0]) for name in names]
        tables = {row[0] for row in fresh.execute(TABLES)}
        # The checkout's migrations, applied by the session fixture, made the same tables.
        assert tables == {row[0] for row in checkout.execute(TABLES)}
        assert "tally_migrations" in tables and any(t.startswith("counts_") for t in tables)


BATCH = """
import json, sys, time
import redis
from tally.events import Event
from tally.ingest.counting.batch import apply_batch
from tally.ingest.counting.config import CountingConfig

client = redis.Redis.from_url(sys.argv[1])
now = int(time.time())
events = [Event(counter="views", key="video:1", ts=now, value=1, id=i, user="u")
          for i in ("a", "a", "b")]
print(json.dumps(list(apply_batch(client, CountingConfig(), events, now=now))))
"""


def test_installed_counting_core_applies_a_batch(venv, outside, redis_url, redis_client):
    out = run(str(venv / "bin" / "python"), "-c", BATCH, redis_url, **outside).stdout
    assert json.loads(out) == [2, 1]
    assert reads.total(redis_client, CountingConfig(), "views", "video:1") == 2
