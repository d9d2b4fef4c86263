"""URLs without their secrets: the one place where storage and tracking URIs are made fit to show or store.

A URL may carry a secret in two places, and both are hidden as ``***``:

* the password of its userinfo, ``scheme://user:PASSWORD@host``. Every character SQLAlchemy, libpq or urllib
  accept counts, ``/``, ``@``, ``:``, ``?`` and percent-encodings included: the userinfo ends at the last ``@``
  that is followed by something shaped like a host (so ``postgresql://u:p@ss/w:rd@db/x`` hides ``p@ss/w:rd``).
  When in doubt more is hidden, never less;
* query parameters whose name looks secret (``?password=...``, accepted by libpq and SQLAlchemy, ``token``,
  ``secret``, ``access_key``, ``api_key``..., any case).

:func:`redact_url` takes one URL; :func:`redact_text` every URL inside a message (an error, a log line), and
also any literal occurrence of the passwords of the URLs redacted so far in this process (every URL is redacted
for display as soon as it is read, so those are the study's storage and tracking URLs).
:func:`install_log_redaction` applies :func:`redact_text` to every log record the command prints.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote, unquote_plus

MASK = "***"
# a query parameter is secret when its name (lower-cased, without - and _) contains one of these
_SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "pass",
    "token",
    "secret",
    "accesskey",
    "apikey",
    "credential",
    "signature",
    "privatekey",
    "sessionkey",
    "auth",
)
# names that contain a word above but hold no secret (a file path, a method name)
_NOT_SECRET = frozenset({"passfile", "sslpassword_file", "authsource", "authmechanism", "gssencmode"})
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HOST = re.compile(r"^(\[[0-9A-Za-z:.%]*\]|[A-Za-z0-9._~%!$&'()*+,;=-]*)(:[0-9]*)?$")
# a URL inside free text: a scheme, ://, then everything up to white space or a closing quote or bracket
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
# every URL this process has redacted: their secrets are also hidden wherever they appear alone in a message
_seen_urls: set[str] = set()


def is_secret_name(name: str) -> bool:
    key = unquote_plus(name).strip().lower()
    if key in _NOT_SECRET:
        return False
    squashed = key.replace("-", "").replace("_", "")
    return any(word in squashed for word in _SECRET_WORDS)


def _userinfo_end(rest: str) -> int:
    """Index of the ``@`` that ends the userinfo in ``rest`` (the URL after ``scheme://``), or -1."""
    at = rest.rfind("@")
    while at >= 0:
        host = re.split(r"[/?#]", rest[at + 1 :], maxsplit=1)[0]
        if _HOST.match(host):
            return at
        at = rest.rfind("@", 0, at)
    return -1


def _split(url: str) -> tuple[str, str, str, str | None] | None:
    """(``scheme://``, userinfo, rest after the ``@``, query or None without a ``?``) of a URL, or None for text that
    is not one."""
    m = _SCHEME.match(url)
    if m is None:
        return None
    rest = url[m.end() :]
    at = _userinfo_end(rest)
    userinfo, tail = (rest[:at], rest[at + 1 :]) if at >= 0 else ("", rest)
    before, sep, query = tail.partition("?")
    return m.group(0), userinfo, before, query if sep else None


def url_password(url: str) -> str | None:
    """The (decoded) password of the URL's userinfo; None when it has none, '' when it is empty."""
    parts = _split(url)
    if parts is None or ":" not in parts[1]:
        return None
    return unquote(parts[1].partition(":")[2])


def query_secrets(url: str) -> list[str]:
    """The (decoded) values of the URL's secret-looking query parameters."""
    parts = _split(url)
    if parts is None or parts[3] is None:
        return []
    found = []
    for piece in re.split(r"[&;]", parts[3]):
        key, sep, value = piece.partition("=")
        if sep and value and is_secret_name(key):
            found.append(unquote_plus(value))
    return found


def redact_url(url: str) -> str:
    """The URL with its userinfo password and its secret-looking query values as ``***``; text that is not a
    URL (a plain path) is returned unchanged."""
    url = str(url)
    parts = _split(url)
    if parts is None:
        return url
    _seen_urls.add(url)
    scheme, userinfo, before, query = parts
    shown = scheme
    if userinfo:
        user, colon, _password = userinfo.partition(":")
        shown += f"{user}:{MASK}@" if colon else f"{user}@"
    shown += before
    if query is not None:
        pieces = []
        for piece in re.split(r"([&;])", query):
            key, sep, value = piece.partition("=")
            pieces.append(f"{key}={MASK}" if sep and value and is_secret_name(key) else piece)
        shown += "?" + "".join(pieces)
    return shown


def redact_text(text: str, *urls: str | None) -> str:
    """``text`` with every URL in it redacted (:func:`redact_url`), and every literal occurrence of a secret of
    ``urls`` and of the URLs redacted so far (their passwords and secret query values, raw or decoded) replaced
    by ``***``: drivers sometimes quote a password outside of its URL."""
    text = str(text)
    if _SCHEME.match(text):  # one whole URL (its password may hold white space)
        text = redact_url(text)
    else:
        text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    secrets: set[str] = set()
    for url in (*urls, *_seen_urls):
        if not url:
            continue
        parts = _split(url)
        if parts is not None and ":" in parts[1]:
            raw = parts[1].partition(":")[2]
            secrets.update({raw, unquote(raw)})
        secrets.update(query_secrets(url))
    for secret in sorted((s for s in secrets if len(s) >= 3), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True


def install_log_redaction() -> None:
    """Redact URLs (and the secrets of the URLs seen) in every record printed by the root logger's handlers."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _RedactingFilter) for f in handler.filters):
            handler.addFilter(_RedactingFilter())
