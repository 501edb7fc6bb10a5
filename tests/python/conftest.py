"""Fixtures for the official-SDK suite: a real keymesh per store backend.

The session fixture ``mesh`` is parametrised over the two store backends
(``sqlite``, ``postgres``). For each it starts ``keymesh-test-mesh`` (the Rust
launcher in tests/src/bin), which starts rate-limiter, crypto-worker and edge
on a fresh SoftHSM2 token and a fresh store, and prints one JSON line:
endpoint, AK/SK accounts (project A full and read-only, project B full) and
pre-issued X-Auth-Tokens. Closing the launcher's stdin stops the mesh; its
exit status then tells whether the plaintext marker leaked into a log.

Binaries come from ``$KEYMESH_BIN_DIR`` or ``<repo>/target/debug``
(``cargo build --workspace --bins`` builds them).

Two ways to talk to the mesh:
* ``mesh.kms(who)`` is the official ``KmsClient`` configured as in §5 of the
  API reference: plain http, ``BasicCredentials(ak, sk, project_id)``,
  ``with_endpoints``, ``user_agent`` set (so no application-id file).
* ``mesh.raw(...)`` sends hand-made requests (malformed JSON, oversized
  bodies, odd paths, X-Auth-Token) signed by the SDK's own ``Signer``, so the
  signature is computed exactly as the official client computes it.
"""

import csv
import json
import os
import re
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import requests
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ServiceResponseException
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkcore.sdk_request import SdkRequest
from huaweicloudsdkcore.signer.signer import Signer
from huaweicloudsdkcsms.v1 import (
    CreateSecretRequest,
    CreateSecretRequestBody,
    CreateSecretVersionRequest,
    CreateSecretVersionRequestBody,
    CsmsClient,
    ShowSecretRequest,
    ShowSecretVersionRequest,
)
from huaweicloudsdkkms.v2 import (
    CreateKeyRequest,
    CreateKeyRequestBody,
    DisableKeyRequest,
    KmsClient,
    ListKeyDetailRequest,
    OperateKeyRequestBody,
)

REPO = Path(__file__).resolve().parents[2]
CSV_PATH = REPO / "tests" / "fixtures" / "huawei-kms-csms.csv"
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60

#: Every crypto test's plaintext starts with this (tests/src/lib.rs MARKER):
#: the launcher fails at exit if it shows up in any service log.
MARKER = "KMPLAINTEXT-9d41c7e2b5q"

UUID_RE = re.compile(r"^[0-9a-z]{8}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{12}$")
HEX_RE = re.compile(r"^[0-9a-fA-F]*$")
B64_CIPHER_RE = re.compile(r"^[0-9a-zA-Z+/=]{128,5648}$")


def _load_codes():
    with CSV_PATH.open(newline="", encoding="utf-8") as f:
        return {
            row["error_code"]: (int(row["http_status"]), row["error_msg"])
            for row in csv.DictReader(f)
        }


#: error_code -> (http_status, error_msg), from the published table.
CODES = _load_codes()


def plaintext(n=32):
    """A plaintext of n characters that starts with (and repeats) MARKER."""
    return (MARKER * (n // len(MARKER) + 1))[:n]


def unique(prefix="e2e"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ---------------------------------------------------------------------------
# Error assertions


def expect_error(call, code):
    """Run ``call()``; it must fail with the published status/code/message."""
    status, msg = CODES[code]
    with pytest.raises(ServiceResponseException) as ei:
        call()
    e = ei.value
    got = (e.status_code, e.error_code, e.error_msg)
    assert got == (status, code, msg), f"expected {(status, code, msg)}, got {got}"
    assert e.request_id, "every response must carry X-Request-Id"
    return e


def expect_raw_error(resp, code):
    """A raw ``requests`` response must be the published error, flat body."""
    status, msg = CODES[code]
    try:
        body = resp.json()
    except ValueError:
        body = resp.text
    assert (resp.status_code, body) == (
        status,
        {"error_code": code, "error_msg": msg},
    ), f"expected {status} {code}, got {resp.status_code} {body!r}"
    assert resp.headers.get("X-Request-Id"), "every response must carry X-Request-Id"


def expect_raw_ok(resp):
    assert resp.status_code == 200, f"expected 200, got {resp.status_code} {resp.text!r}"
    assert resp.headers.get("X-Request-Id"), "every response must carry X-Request-Id"
    assert resp.headers.get("Content-Type", "").startswith("application/json")
    return resp.json()


# ---------------------------------------------------------------------------
# The mesh


class Mesh:
    """One running keymesh (one store backend) and ways to reach it."""

    def __init__(self, proc, info, stderr_path):
        self.proc = proc
        self.info = info
        self.stderr_path = stderr_path
        self.store = info["store"]
        self.endpoint = info["endpoint"]
        self.accounts = info["accounts"]
        self.tokens = info["tokens"]
        self.project_a = info["projects"]["a"]
        self.project_b = info["projects"]["b"]
        self._clients = {}
        self._session = requests.Session()
        # Loopback only: never route through a proxy from the environment.
        self._session.trust_env = False

    # ----- official client

    def kms(self, who="a_full"):
        """The official KmsClient for account ``who`` (a_full, a_readonly, b_full)."""
        return self._client(KmsClient, who)

    def csms(self, who="a_full"):
        """The official CsmsClient for account ``who``, configured like ``kms``."""
        return self._client(CsmsClient, who)

    def _client(self, cls, who):
        """One cached ``cls`` client per (class, account): plain http,
        ``BasicCredentials(ak, sk, project_id)``, a user agent, timeouts."""
        k = (cls, who)
        if k not in self._clients:
            acc = self.accounts[who]
            config = HttpConfig.get_default_config()
            config.user_agent = "keymesh-e2e"
            config.timeout = (10, 60)
            creds = BasicCredentials(acc["access_key"], acc["secret_key"], acc["project_id"])
            self._clients[k] = (
                cls.new_builder()
                .with_http_config(config)
                .with_credentials(creds)
                .with_endpoints([self.endpoint])
                .build()
            )
        return self._clients[k]

    def new_key(self, who="a_full", **fields):
        """Create an AES_256 key; returns its id."""
        body = CreateKeyRequestBody(key_alias=fields.pop("key_alias", unique("key")), **fields)
        r = self.kms(who).create_key(CreateKeyRequest(body=body))
        return r.key_info.key_id

    # ----- raw HTTP

    def raw(
        self,
        method,
        path,
        body=None,
        who="a_full",
        query=None,
        headers=None,
        sign=True,
        project_header=True,
        content_type="application/json;charset=utf-8",
    ):
        """Send one request. ``path`` is sent verbatim (already encoded);
        ``{project}`` in it becomes the account's project id. ``body`` is
        bytes, a str, or a JSON-able object (serialised like the SDK does).
        With ``sign`` the SDK's own Signer signs it with ``who``'s AK/SK
        (``who`` is an account name, or an account dict for made-up keys)."""
        acc = who if isinstance(who, dict) else self.accounts[who]
        path = path.replace("{project}", acc["project_id"])
        if body is None:
            data = b""
        elif isinstance(body, bytes):
            data = body
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        hdrs = {"Content-Type": content_type, "User-Agent": "huaweicloud-usdk-python/3.0; keymesh-e2e"}
        if project_header:
            hdrs["X-Project-Id"] = acc["project_id"]
        hdrs.update(headers or {})
        host = self.endpoint.split("://", 1)[1]
        req = SdkRequest(
            method=method,
            schema="http",
            host=host,
            resource_path=path,
            query_params=list(query or []),
            header_params=hdrs,
            body=data,
        )
        if sign:
            req = Signer(BasicCredentials(acc["access_key"], acc["secret_key"], acc["project_id"])).sign(req)
        else:
            Signer.process_request_uri(req)
        return self._session.request(
            method,
            self.endpoint + req.uri,
            headers=req.header_params,
            data=req.body if req.body else None,
            timeout=60,
        )

    def token_request(self, method, path, token, body=None, project=None, headers=None):
        """An X-Auth-Token request (no AK/SK signature). ``token=None``
        sends no X-Auth-Token header at all."""
        project = project or self.project_a
        hdrs = {"Content-Type": "application/json;charset=utf-8"}
        if token is not None:
            hdrs["X-Auth-Token"] = token
        hdrs.update(headers or {})
        data = b"" if body is None else json.dumps(body).encode()
        return self._session.request(
            method,
            self.endpoint + path.replace("{project}", project),
            headers=hdrs,
            data=data or None,
            timeout=60,
        )

    # ----- lifecycle

    def stop(self):
        """Close stdin (the launcher's stop signal); return its exit status."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "timeout"

    def stderr_tail(self, n=4000):
        try:
            return self.stderr_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


def _bin_dir():
    return Path(os.environ.get("KEYMESH_BIN_DIR") or REPO / "target" / "debug")


def _start_mesh(store, tmp_dir):
    launcher = _bin_dir() / "keymesh-test-mesh"
    if not launcher.is_file():
        pytest.fail(f"{launcher} not found: run `cargo build --workspace --bins` first")
    stderr_path = tmp_dir / f"keymesh-test-mesh-{store}.stderr"
    stderr = stderr_path.open("wb")
    proc = subprocess.Popen(
        [str(launcher), "--store", store],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )
    stderr.close()
    # readline() with a deadline: the launcher prints its line once the mesh is ready.
    line = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(START_TIMEOUT_S)
    if not line or not line[0].strip():
        proc.kill()
        proc.wait()
        tail = stderr_path.read_text(errors="replace")[-6000:]
        pytest.fail(f"keymesh-test-mesh --store {store} did not start:\n{tail}")
    return Mesh(proc, json.loads(line[0]), stderr_path)


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def mesh(request, tmp_path_factory):
    m = _start_mesh(request.param, tmp_path_factory.mktemp(f"mesh-{request.param}"))
    yield m
    status = m.stop()
    if status != 0:
        pytest.fail(
            f"keymesh-test-mesh ({m.store}) exited with {status} "
            f"(plaintext in a log, or an unclean stop):\n{m.stderr_tail()}"
        )


@pytest.fixture
def kms(mesh):
    """The official client of project A's full account."""
    return mesh.kms("a_full")


@pytest.fixture
def key(mesh):
    """A fresh enabled AES_256 key in project A."""
    return mesh.new_key()


@pytest.fixture(scope="module")
def shared_key(mesh):
    """An enabled AES_256 key in project A that tests only use, never change
    (keeps the key count well under the 100-keys-per-project quota)."""
    return mesh.new_key()


@pytest.fixture
def csms(mesh):
    """The official CSMS client of project A's full account."""
    return mesh.csms("a_full")


def new_secret(csms_client, name=None, **fields):
    """Create a secret (text value with MARKER unless a value is given);
    returns the SDK's ``Secret`` object."""
    if "secret_string" not in fields and "secret_binary" not in fields:
        fields["secret_string"] = plaintext(40)
    body = CreateSecretRequestBody(name=name or unique("sec"), **fields)
    return csms_client.create_secret(CreateSecretRequest(body=body)).secret


# ---------------------------------------------------------------------------
# SDK call shorthands shared by several test modules


def describe(kms, key_id):
    return kms.list_key_detail(ListKeyDetailRequest(body=OperateKeyRequestBody(key_id=key_id))).key_info


def disable(kms, key_id):
    return kms.disable_key(DisableKeyRequest(body=OperateKeyRequestBody(key_id=key_id)))


def show(csms, name):
    return csms.show_secret(ShowSecretRequest(secret_name=name)).secret


def version(csms, name, vid):
    return csms.show_secret_version(ShowSecretVersionRequest(secret_name=name, version_id=vid)).version


def add_version(csms, name, **body):
    return csms.create_secret_version(
        CreateSecretVersionRequest(secret_name=name, body=CreateSecretVersionRequestBody(**body))
    ).version_metadata
