"""PyMySQL (a second, independent client library) through baton.

Run by tests/python_clients.rs, which starts baton and sets BATON_PORT and
DIRECT_PORT (the primary, for comparison)."""

import datetime
import decimal
import os

import pymysql
import pytest

BATON = int(os.environ["BATON_PORT"])
DIRECT = int(os.environ["DIRECT_PORT"])


def connect(port, **kw):
    return pymysql.connect(host="127.0.0.1", port=port, user="app", password="app",
                           database="baton_test", charset="utf8mb4", **kw)


@pytest.fixture
def conn():
    c = connect(BATON)
    yield c
    c.close()


def test_types_match_direct(conn):
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS py_types")
        cur.execute("""CREATE TABLE py_types (id INT PRIMARY KEY, de DECIMAL(12,3), d DATE,
                       dt DATETIME(6), t TIME, vc VARCHAR(50), bl BLOB, js JSON, n INT NULL)""")
        cur.execute("INSERT INTO py_types VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (1, decimal.Decimal("123456789.125"), datetime.date(2024, 2, 29),
                     datetime.datetime(2024, 1, 2, 3, 4, 5, 678901), datetime.timedelta(hours=-5),
                     "Grüße 🎉", b"\x00\xff\x01", '{"a": 1}', None))
    conn.commit()
    query = "SELECT * FROM py_types ORDER BY id"
    with conn.cursor() as cur:
        cur.execute(query)
        via_baton = (cur.fetchall(), cur.description)
    direct = connect(DIRECT)
    with direct.cursor() as cur:
        cur.execute(query)
        via_direct = (cur.fetchall(), cur.description)
    direct.close()
    assert via_baton == via_direct
    row = via_baton[0][0]
    assert row[1] == decimal.Decimal("123456789.125")
    assert row[5] == "Grüße 🎉"
    assert row[8] is None


def test_errors_keep_codes(conn):
    with conn.cursor() as cur:
        with pytest.raises(pymysql.err.ProgrammingError) as e:
            cur.execute("SELECT * FROM no_such_table")
        assert e.value.args[0] == 1146
        with pytest.raises(pymysql.err.ProgrammingError) as e:
            cur.execute("SELEC 1")
        assert e.value.args[0] == 1064
        cur.execute("CREATE TABLE IF NOT EXISTS py_dup (id INT PRIMARY KEY)")
        cur.execute("INSERT IGNORE INTO py_dup VALUES (1)")
        conn.commit()
        with pytest.raises(pymysql.err.IntegrityError) as e:
            cur.execute("INSERT INTO py_dup VALUES (1)")
        assert e.value.args[0] == 1062
        cur.execute("SELECT 1")
        assert cur.fetchone() == (1,)


def test_transactions_and_multi_statements():
    c = connect(BATON, client_flag=pymysql.constants.CLIENT.MULTI_STATEMENTS, autocommit=False)
    with c.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS py_tx (id INT PRIMARY KEY)")
        cur.execute("DELETE FROM py_tx")
        c.commit()
        cur.execute("INSERT INTO py_tx VALUES (1)")
        c.commit()
        cur.execute("INSERT INTO py_tx VALUES (2)")
        c.rollback()
        cur.execute("SELECT id FROM py_tx ORDER BY id")
        assert cur.fetchall() == ((1,),)
        cur.execute("SELECT 1; SELECT 2, 3")
        assert cur.fetchall() == ((1,),)
        assert cur.nextset()
        assert cur.fetchall() == ((2, 3),)
        # affected rows and last insert id survive baton's OK rewriting
        cur.execute("CREATE TABLE IF NOT EXISTS py_ai (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        cur.execute("INSERT INTO py_ai (v) VALUES (1), (2), (3)")
        assert cur.rowcount == 3
        assert cur.lastrowid > 0
        c.commit()
    c.close()


def test_wrong_password_is_1045():
    with pytest.raises(pymysql.err.OperationalError) as e:
        pymysql.connect(host="127.0.0.1", port=BATON, user="app", password="nope")
    assert e.value.args[0] == 1045
