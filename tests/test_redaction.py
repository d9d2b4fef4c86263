"""No secret of a storage or tracking URL in anything shown or stored: every legal password shape, and secret
query parameters, through the one redaction function."""

from __future__ import annotations

import logging
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

from search.formats.redaction import install_log_redaction, redact_text, redact_url, url_password

# passwords as a user may write them: characters that end a password in a naive pattern, and encodings
PASSWORDS = [
    "s3cr3t-plain",
    "pa/ss/word",  # '/' (SQLAlchemy and libpq accept it in the userinfo)
    "p@ss@word",  # '@'
    "p:a:ss",  # ':'
    "q?u#e&r=y",  # query and fragment delimiters
    "sp ace tab",  # white space
    "mixed/@:?#%x",
]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("scheme", ["postgresql+psycopg2", "postgresql", "mysql+pymysql", "http", "https"])
def test_userinfo_password_is_hidden_raw(scheme, password):
    url = f"{scheme}://losstune:{password}@db.internal:5432/losstune_optuna"
    shown = redact_url(url)
    assert shown == f"{scheme}://losstune:***@db.internal:5432/losstune_optuna"
    assert url_password(url) == password


@pytest.mark.parametrize("password", PASSWORDS)
def test_percent_encoded_password_is_hidden_in_both_forms(password):
    encoded = quote(password, safe="")
    url = f"postgresql+psycopg2://losstune:{encoded}@db.internal/losstune_optuna?sslmode=require"
    assert make_url(url).password == password  # the driver reads the decoded password
    shown = redact_url(url)
    assert shown == "postgresql+psycopg2://losstune:***@db.internal/losstune_optuna?sslmode=require"
    # a driver message quoting the decoded password alone is cleaned too, once the URL has been seen
    message = f"FATAL: password authentication failed (tried {password!s})"
    assert password not in redact_text(message, url)


@pytest.mark.parametrize(
    "key",
    [
        "password",
        "PASSWORD",
        "Passwd",
        "pwd",
        "token",
        "access_token",
        "secret",
        "client_secret",
        "access_key",
        "AWS_SECRET_ACCESS_KEY",
        "api_key",
        "apikey",
        "X-Api-Key",
        "sslpassword",
    ],
)
def test_secret_query_parameters_are_hidden(key):
    url = f"postgresql://losstune@db.internal/opt?sslmode=require&{key}=hunter2%2Fx&application_name=lt"
    shown = redact_url(url)
    assert "hunter2" not in shown
    assert shown == f"postgresql://losstune@db.internal/opt?sslmode=require&{key}=***&application_name=lt"


def test_both_places_at_once_and_other_parameters_kept():
    url = "postgresql://u:p%40w@h:5/db?password=second&sslmode=verify-full&passfile=/home/u/.pgpass"
    assert redact_url(url) == "postgresql://u:***@h:5/db?password=***&sslmode=verify-full&passfile=/home/u/.pgpass"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////tmp/studies/demo.optuna.db",
        "sqlite:///relative/mlflow.db?timeout=60",
        "postgresql://losstune@db.internal:5432/opt",  # no password: libpq's ~/.pgpass
        "http://mlflow.internal:5000",
        "file:///srv/mlartifacts/demo",
        "/plain/path/not/a/url",
    ],
)
def test_urls_without_secrets_are_unchanged(url):
    assert redact_url(url) == url


@pytest.mark.parametrize("password", PASSWORDS)
def test_urls_inside_messages(password):
    url = f"postgresql+psycopg2://losstune:{quote(password, safe='/@:')}@db.internal/o"
    text = f"cannot open storage {url}: connection refused; retrying {url}"
    shown = redact_text(text)
    assert shown.count("losstune:***@db.internal/o") == 2
    for part in (p for p in password.split() if len(p) >= 3):
        assert part not in shown


def test_log_records_are_redacted():
    import io

    url = "postgresql://u:pa/ss@h/db?token=abc123"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_log_redaction()
        logging.getLogger("some.driver").warning("store %s unreachable", url)
    finally:
        root.removeHandler(handler)
    printed = stream.getvalue()
    assert "store postgresql://u:***@h/db?token=*** unreachable" in printed
    assert "pa/ss" not in printed and "abc123" not in printed
