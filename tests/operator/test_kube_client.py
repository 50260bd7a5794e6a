"""The operator's API client stack (controller/kubeclient.py, issue 14, item 7).

Covers: a 401 reloads the credentials once and the request is sent again with the new token
(the old one revoked by the emulator); a changed credentials file is picked up before any 401;
a login that keeps failing keeps the last credentials; proxy variables are ignored
(``trust_env=False``); a kubeconfig's CA, client certificate and key *data* are used from
memory files -- a real TLS server that requires the client certificate accepts the client, and
nothing is written to the temporary directory.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import kopf
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes_asyncio import client as k8s

from imagecache.controller.kubeclient import ApiCredentials, MemoryFiles, open_api_client
from tests.kube import discovery
from tests.kube.emulator import Emulator


def _login_from(tokens: list[str], url: str) -> Callable[[], kopf.ConnectionInfo]:
    """A login answering the last token of `tokens` (a test rotates it by appending)."""
    return lambda: kopf.ConnectionInfo(server=url, token=tokens[-1])


def _sent_with(kube: Emulator, token: str) -> int:
    """How many requests the emulator got with this bearer token."""
    return sum(1 for r in kube.requests if r.headers.get("Authorization") == f"Bearer {token}")


async def test_a_401_reloads_the_credentials_once_and_retries(kube: Emulator) -> None:
    tokens = ["op-1"]
    credentials = ApiCredentials(_login_from(tokens, kube.url))
    async with await open_api_client(credentials) as api:
        core = k8s.CoreV1Api(api)
        await core.list_namespaced_pod("default")
        tokens.append("op-2")
        kube.revoke_token("op-1")
        pods = await core.list_namespaced_pod("default")  # 401 with op-1, then op-2
        assert pods.items == []
        await core.list_namespaced_pod("default")
    assert credentials.reloads == 1
    assert _sent_with(kube, "op-2") == 2


async def test_a_401_with_unchanged_credentials_is_not_retried(kube: Emulator) -> None:
    credentials = ApiCredentials(_login_from(["dead"], kube.url))
    kube.revoke_token("dead")
    async with await open_api_client(credentials) as api:
        with pytest.raises(k8s.ApiException) as raised:
            await k8s.CoreV1Api(api).list_namespaced_pod("default")
    assert raised.value.status == 401
    assert _sent_with(kube, "dead") == 1


async def test_a_changed_credentials_file_is_read_before_any_401(
    kube: Emulator, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("file-1")
    now = [0.0]

    def login() -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=kube.url, token=token_file.read_text())

    credentials = ApiCredentials(login, files=[token_file], clock=lambda: now[0])
    async with await open_api_client(credentials) as api:
        core = k8s.CoreV1Api(api)
        await core.list_namespaced_pod("default")
        replacement = tmp_path / "token.new"
        replacement.write_text("file-2")
        os.replace(replacement, token_file)  # as the kubelet swaps a projected token
        kube.revoke_token("file-1")
        now[0] += 2.0  # past the stat check period
        await core.list_namespaced_pod("default")
    assert _sent_with(kube, "file-1") == 1, "the new token was used without a 401 first"
    assert credentials.reloads == 1


async def test_a_failing_relogin_keeps_the_last_credentials(kube: Emulator) -> None:
    answers: list[kopf.ConnectionInfo | None] = [kopf.ConnectionInfo(server=kube.url, token="t")]
    credentials = ApiCredentials(lambda: answers[-1])
    answers.append(None)
    assert credentials.reload() is False
    assert credentials.header() == "Bearer t"


async def test_proxy_variables_are_ignored(kube: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    credentials = ApiCredentials(_login_from(["t"], kube.url))
    async with await open_api_client(credentials) as api:
        assert (await k8s.CoreV1Api(api).list_namespaced_pod("default")).items == []


# -- TLS with a client certificate held in memory -----------------------------------------------


def _certificate(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, Any] | None, **ext: Any
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    if "ip" in ext:
        import ipaddress

        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ext["ip"]))])
        builder = builder.add_extension(san, False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture
async def tls_server(tmp_path: Path) -> AsyncIterator[dict[str, Any]]:
    """A TLS server requiring a client certificate signed by its CA; records the client CN."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test-ca", ca_key, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate("127.0.0.1", server_key, (ca.subject, ca_key), ip="127.0.0.1")
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("operator", client_key, (ca.subject, ca_key))
    server_dir = tmp_path / "server"  # the *server's* files (the test's, not the client's)
    server_dir.mkdir()
    (server_dir / "tls.crt").write_bytes(_pem(server))
    (server_dir / "tls.key").write_bytes(_key_pem(server_key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=_pem(ca).decode())
    context.load_cert_chain(server_dir / "tls.crt", server_dir / "tls.key")
    context.verify_mode = ssl.CERT_REQUIRED
    seen: list[str] = []

    async def version(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen.append(dict(x[0] for x in peer["subject"])["commonName"] if peer else "")
        return web.json_response(discovery.version())

    app = web.Application()
    app.router.add_get("/version/", version)
    app.router.add_get("/version", version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield {
            "url": f"https://127.0.0.1:{port}",
            "ca": _pem(ca),
            "cert": _pem(client),
            "key": _key_pem(client_key),
            "seen": seen,
        }
    finally:
        await runner.cleanup()


async def test_client_key_data_is_used_from_memory_not_from_disk(
    tls_server: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import base64

    # A temporary directory of this test's own: what other tests (or other pytest-xdist
    # workers) create in the shared one at the same time is none of this test's business.
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    before = set(os.listdir(tempfile.gettempdir()))
    memory = MemoryFiles()
    info = kopf.ConnectionInfo(
        server=tls_server["url"],
        ca_data=base64.b64encode(tls_server["ca"]),  # as a kubeconfig holds it
        certificate_data=base64.b64encode(tls_server["cert"]),
        private_key_data=base64.b64encode(tls_server["key"]),
    )
    credentials = ApiCredentials(lambda: info, memory=memory)
    assert str(credentials.info.private_key_path).startswith("/proc/self/fd/")
    assert credentials.info.private_key_data is None
    try:
        async with await open_api_client(credentials) as api:
            answer = await k8s.VersionApi(api).get_code()
    finally:
        memory.close()
    assert answer.git_version == discovery.version()["gitVersion"]
    assert tls_server["seen"] == ["operator"], "the server saw the client certificate"
    assert set(os.listdir(tempfile.gettempdir())) - before == set()
