"""Credentials in store URLs: shown masked, stored nowhere, handed over through the environment.

A URL may carry a password (`http://me:s3cret@mlflow.internal:5000`,
`postgresql://me:s3cret@db/mlflow`). Whatever lmforge prints, writes into a manifest, logs to
MLflow or sends to Prefect (every flow's `config` parameter, shown in the UI's Parameters tab and
kept in Prefect's database) shows it as `mask_url` does, or holds no credential at all:

- `tracking.tracking_uri` gives its credentials up when the config is validated
  (`tracking_credentials_to_env`): an MLflow server's user and password move into MLflow's own
  `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`, a PostgreSQL store's password into
  libpq's `PGPASSWORD`, for this process and the ones it starts; the config keeps the URL without
  them. A process that never saw the URL (a Prefect worker) takes the same variables.
- `mask_url` and `mask_urls` are for showing a URL, or a message that may quote one.

A leaf: the standard library only.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

MASK = "***"
# scheme://user:PASSWORD@ : the password, up to the last @ before the host (a password may hold @)
_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^\s/]*@")
_HTTP = ("http", "https")
_POSTGRES = ("postgresql", "postgres")


def mask_url(url: str) -> str:
    """`url` with its password replaced by ***: postgresql://me:***@db/lmforge."""
    return mask_urls(url)


def mask_urls(text: str) -> str:
    """`text` (a message, a log line) with the password of every URL in it replaced by ***."""
    return _PASSWORD.sub(lambda m: f"{m['head']}{MASK}@", text)


def without_userinfo(url: str) -> str:
    """`url` without `user:password@`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def tracking_credentials_to_env(uri: str) -> str:
    """The MLflow store `uri` without its password, which goes into the environment (see the
    module's docstring); `uri` itself when it holds none. Raises ValueError for a password that
    no environment variable can carry (a database other than PostgreSQL)."""
    try:
        parts = urlsplit(uri)
        user, password = parts.username, parts.password
    except ValueError:  # not a URL at all: MLflow says so when it is used
        return uri
    scheme = parts.scheme.lower().split("+")[0]
    if scheme in _HTTP and (user or password):
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user or "")
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password or "")
        return without_userinfo(uri)
    if password is None:
        return uri
    if scheme in _POSTGRES:
        os.environ["PGPASSWORD"] = unquote(password)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}" if parts.username else host))
    raise ValueError(
        f"a password in a {parts.scheme}:// URL would be stored with the config ({mask_url(uri)}): "
        "leave it out of the URL and give it to the database client through its own environment "
        "or configuration file"
    )
