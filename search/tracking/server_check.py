"""Whether an MLflow tracking server answers: one real request with a short time-out and a bounded retry.

A TCP connection alone proves little: a server (or a proxy in front of it) that accepts connections but never
answers, or answers 503, would leave MLflow's client retrying for minutes (urllib3's retries, 120 s read
time-outs), often with no output. So the check sends the request MLflow itself sends first (the experiment
search of its REST API, one row), with the credentials MLflow would use, and refuses in one line what is not
an answer: no connection, no answer within the time-out, a 5xx status, a refused login. It also bounds MLflow's
own retries for the rest of the command (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``MLFLOW_HTTP_REQUEST_TIMEOUT``;
values the user set are kept), so a server that stops answering later fails in about a minute, not ten.
"""

from __future__ import annotations

import base64
import os
import socket
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from objectives.errors import LosstuneError

ATTEMPTS = 2  # the request, and one retry after RETRY_PAUSE_SECONDS (a server restarting, a dropped connection)
RETRY_PAUSE_SECONDS = 1.0
PROBE_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"
MLFLOW_RETRIES = "2"
MLFLOW_TIMEOUT_SECONDS = "30"


def _request(uri: str) -> urllib.request.Request:
    parsed = urlparse(uri)
    netloc = parsed.netloc.rpartition("@")[2]  # credentials in the URI go in the header, as MLflow sends them
    request = urllib.request.Request(parsed._replace(netloc=netloc).geturl().rstrip("/") + PROBE_PATH, method="GET")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    user = parsed.username or os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = parsed.password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    elif user and password:
        basic = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {basic}")
    return request


def _failure(uri: str, timeout: float) -> str | None:
    """Why one request to the server failed, or None when it answered (any status below 500 but a refused
    login: a 404 is an MLflow that does not know the experiment, an answer all the same)."""
    try:
        with urllib.request.urlopen(_request(uri), timeout=timeout):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return f"the server refused the login (HTTP {exc.code}): set MLFLOW_TRACKING_USERNAME/PASSWORD or TOKEN"
        return f"the server answered HTTP {exc.code} {exc.reason}" if exc.code >= 500 else None
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (TimeoutError, socket.timeout)):
            return f"no answer within {timeout:g} s"
        return getattr(reason, "strerror", None) or str(reason)
    except (OSError, ValueError) as exc:  # a connection reset mid-answer, a URL urllib cannot use
        return getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"


def check_server_answers(uri: str, shown: str, timeout: float) -> None:
    """Refuse, in one line naming ``shown`` (the URI without its password), a tracking server that does not
    answer; see the module's docstring."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", MLFLOW_RETRIES)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", MLFLOW_TIMEOUT_SECONDS)
    if urlparse(uri).hostname is None:
        raise LosstuneError(f"cannot reach the MLflow tracking server {shown}: the URI names no host")
    reason = None
    for attempt in range(ATTEMPTS):
        reason = _failure(uri, timeout)
        if reason is None:
            return
        if attempt + 1 < ATTEMPTS:
            time.sleep(RETRY_PAUSE_SECONDS)
    raise LosstuneError(
        f"cannot reach the MLflow tracking server {shown}: {reason} ({ATTEMPTS} tries, {timeout:g} s each)"
    )
