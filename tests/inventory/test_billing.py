"""Importing straight from a billing database: a real PostgreSQL and MariaDB.

The servers come from scripts/databases.sh (the test command runs it). Set
ANNOUNCER_TEST_PG_URL / ANNOUNCER_TEST_MYSQL_URL to use others. Where a server
cannot be reached the tests are skipped with the reason, except under CI,
where they must run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy
from redis.asyncio import Redis

from announcer.config import BillingSettings, Settings
from announcer.inventory.billing import BillingReader
from announcer.inventory.importer import run_import
from announcer.inventory.model import Table, TableError
from announcer.keys import Keys
from announcer.lookup import Lookup
from announcer.phones import PhoneNormaliser

SERVERS = {
    "postgresql": os.environ.get(
        "ANNOUNCER_TEST_PG_URL",
        "postgresql+psycopg://announcer_test:announcer_test@127.0.0.1:5432/postgres",
    ),
    "mariadb": os.environ.get(
        "ANNOUNCER_TEST_MYSQL_URL",
        "mysql+pymysql://announcer_test:announcer_test@127.0.0.1:3306/",
    ),
}

# A billing schema that is not announcer's: other names, numbers as billing
# types them, an extra table to join.
SCHEMA = [
    "CREATE TABLE areas (area_id INTEGER PRIMARY KEY, title VARCHAR(100))",
    "CREATE TABLE devices (name VARCHAR(50) PRIMARY KEY, mgmt_ip VARCHAR(50),"
    " area_id INTEGER, uplink VARCHAR(50))",
    "CREATE TABLE contracts (contract_no INTEGER PRIMARY KEY, device VARCHAR(50),"
    " port INTEGER, street VARCHAR(200))",
    "CREATE TABLE contract_phones (contract_no INTEGER, phone VARCHAR(40))",
    "INSERT INTO areas VALUES (1, 'Северный'), (2, 'Южный')",
    "INSERT INTO devices VALUES ('core', '127.0.0.10', 1, NULL),"
    " ('n1', '127.0.0.11', 1, 'core'), ('s1', '127.0.0.12', 2, 'core'),"
    " ('bad', 'not-an-ip', 2, 'core')",
    "INSERT INTO contracts VALUES (1001, 'n1', 3, 'ул. Северная, 1'),"
    " (1002, 's1', 4, 'ул. Южная, 2')",
    "INSERT INTO contract_phones VALUES (1001, '8 (916) 123-45-67'),"
    " (1001, '8 (495) 123-45-67'), (1002, '+7 926 000-00-01')",
]

QUERIES = {
    "districts_query": "SELECT area_id AS id, title AS name FROM areas",
    "switches_query": "SELECT name AS id, mgmt_ip AS address, area_id AS district,"
    " uplink AS parent FROM devices ORDER BY name",
    "subscribers_query": "SELECT p.phone, c.device AS switch, c.contract_no AS account,"
    " c.port, c.street AS address FROM contract_phones p"
    " JOIN contracts c ON c.contract_no = p.contract_no",
}


def _unavailable(kind: str, url: str, exc: Exception) -> None:
    where = url.rsplit("@", maxsplit=1)[-1]
    message = f"{kind} at {where} cannot be reached ({exc}); run scripts/databases.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(params=sorted(SERVERS))
def billing_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database with the billing schema, dropped afterwards."""
    kind: str = request.param
    admin_url = SERVERS[kind]
    name = f"announcer_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(
        admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5}
    )
    try:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    except sqlalchemy.exc.OperationalError as exc:
        admin.dispose()
        _unavailable(kind, admin_url, exc)
    url = sqlalchemy.make_url(admin_url).set(database=name)
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in SCHEMA:
                conn.execute(sqlalchemy.text(statement))
        engine.dispose()
        yield url.render_as_string(hide_password=False)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f"DROP DATABASE {name}"))
        admin.dispose()


def billing_settings(url: str, **queries: str) -> BillingSettings:
    return BillingSettings.model_validate({"url": url, **QUERIES, **queries})


def tables(reader: BillingReader) -> tuple[Table, Table, Table]:
    return reader.table("districts"), reader.table("switches"), reader.table("subscribers")


async def test_import_from_billing_database(
    billing_url: str, settings: Settings, redis: Redis, keys: Keys
) -> None:
    # one bad switch of four is a quarter; allow it so the rest goes in
    inventory = settings.inventory.model_copy(update={"max_bad_share": 0.3})
    s = settings.model_copy(
        update={"billing": billing_settings(billing_url), "inventory": inventory}
    )
    with BillingReader(s.billing) as reader:
        result = await run_import(s, redis, keys, lambda: tables(reader), "billing")
    assert result.ok
    assert [str(e) for e in result.outcome.errors] == [
        "billing switches_query, row 1: switch 'bad': address 'not-an-ip' is not an IPv4 or"
        " IPv6 address"
    ]
    lookup = Lookup(redis, keys, PhoneNormaliser())
    answer = await lookup("+79161234567")
    assert (answer.switch, answer.district_name, answer.account, answer.port) == (
        "n1",
        "Северный",
        "1001",
        "3",
    )
    assert (await lookup("+7 495 123 45 67")).account == "1001"  # a second number
    assert (await lookup("89260000001")).address == "ул. Южная, 2"


def test_broken_query_says_which_and_why(billing_url: str) -> None:
    s = billing_settings(billing_url, switches_query="SELECT * FROM no_such_table")
    with BillingReader(s) as reader:
        table = reader.table("switches")
        with pytest.raises(TableError) as caught:
            list(table.rows)
    message = str(caught.value)
    assert message.startswith("billing switches_query: the query failed: ")
    assert "no_such_table" in message
    assert message.endswith("check [billing] switches_query")


def test_query_without_the_needed_columns(billing_url: str) -> None:
    s = billing_settings(billing_url, subscribers_query="SELECT phone FROM contract_phones")
    with BillingReader(s) as reader, pytest.raises(TableError) as caught:
        list(reader.table("subscribers").rows)
    assert str(caught.value) == (
        "billing subscribers_query: missing column switch; the query returns phone;"
        " alias the columns, e.g. SELECT x AS switch"
    )


def test_database_that_does_not_answer() -> None:
    s = BillingSettings(
        url="postgresql+psycopg://nobody:x@127.0.0.1:9/billing", connect_timeout_s=2
    )
    with pytest.raises(TableError) as caught:
        BillingReader(s)
    assert str(caught.value).startswith("[billing] url: cannot connect to the billing database: ")


def test_no_billing_url() -> None:
    with pytest.raises(TableError, match=r"\[billing\] url: not set"):
        BillingReader(BillingSettings())
