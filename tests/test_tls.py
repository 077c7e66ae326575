"""HTTPS (`stratos up --tls`, STRATOS_API_TLS=1): the certificate made on first start (or given
by path), the API and the mock IaaS served over it, and the clients (the CLI verbs, the libcloud
driver, the API's view of the mock IaaS) trusting it."""

from __future__ import annotations

import json
import ssl
import stat

import httpx
import pytest
from cryptography import x509
from pydantic import SecretStr
from typer.testing import CliRunner

from infra.api.app import create_app
from infra.api.server import ApiServer
from infra.auth.tls import TlsConfigError, generate_self_signed, server_certificate, tls_options, trusted_ca
from infra.broker import free_port
from infra.cli.main import app
from infra.cloud.mock.service import MockIaasService
from infra.observe.follower import stop_together
from infra.settings import get_settings


def test_a_self_signed_certificate_is_made_once_into_the_state_dir_with_an_owner_only_key(settings, tmp_path):
    tls = settings.model_copy(update={"api_tls": True, "state_dir": tmp_path})
    cert, key = server_certificate(tls)
    assert (cert, key) == (tmp_path / "tls" / "cert.pem", tmp_path / "tls" / "key.pem")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    loaded = x509.load_pem_x509_certificate(cert.read_bytes())
    names = loaded.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in {str(a) for a in names.get_values_for_type(x509.IPAddress)}
    before = cert.read_bytes()
    assert server_certificate(tls) == (cert, key) and cert.read_bytes() == before  # kept, not remade
    assert trusted_ca(tls) == cert


def test_a_certificate_given_by_path_is_used_and_a_half_given_one_is_refused_naming_both(settings, tmp_path):
    generate_self_signed(tmp_path / "mine.pem", tmp_path / "mine.key", ["stratos.example.org"])
    given = settings.model_copy(
        update={
            "api_tls": True,
            "state_dir": tmp_path / "state",
            "api_tls_cert": tmp_path / "mine.pem",
            "api_tls_key": tmp_path / "mine.key",
        }
    )
    assert tls_options(given) == {"ssl_certfile": str(tmp_path / "mine.pem"), "ssl_keyfile": str(tmp_path / "mine.key")}
    assert not (tmp_path / "state" / "tls").exists()
    with pytest.raises(TlsConfigError, match="STRATOS_API_TLS_CERT and STRATOS_API_TLS_KEY"):
        server_certificate(given.model_copy(update={"api_tls_key": None}))
    with pytest.raises(TlsConfigError, match="STRATOS_API_TLS_KEY: no file at"):
        server_certificate(given.model_copy(update={"api_tls_key": tmp_path / "absent.key"}))
    assert tls_options(given.model_copy(update={"api_tls": False})) == {}  # plain HTTP stays the default


def stratos(monkeypatch, env: dict[str, str], *args: str):
    """A `stratos` verb in this process, its settings from `env` (as the console script reads them)."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        get_settings.cache_clear()


@pytest.mark.integration
def test_the_api_cli_and_mock_iaas_over_https_trusting_the_generated_certificate(settings, tmp_path, monkeypatch):
    tls = settings.model_copy(
        update={
            "api_tls": True,
            "state_dir": tmp_path,
            "admin_password": SecretStr("tls-pw"),
            "password_hash_rounds": 4,
        }
    )
    mock = MockIaasService(tls, port=free_port()).start()
    api_settings = tls.model_copy(update={"mock_iaas_url": mock.url, "mock_iaas_key": SecretStr(mock.key)})
    api = ApiServer(create_app(api_settings), port=free_port(), **tls_options(tls)).start()
    try:
        assert api.url.startswith("https://") and mock.url.startswith("https://")
        node = mock.endpoint.driver().create_node(name="php1.tls", ex_metadata={"tenant": "carbon.super"})
        assert [n.id for n in mock.endpoint.driver().list_nodes()] == [node.id]  # libcloud over HTTPS

        trusted = ssl.create_default_context(cafile=str(tmp_path / "tls" / "cert.pem"))
        with httpx.Client(base_url=api.url, auth=("admin", "tls-pw"), verify=trusted, timeout=30) as http:
            listed = http.get("/mock-iaas/api/instances")  # the API's port, on to the mock over HTTPS
            assert listed.status_code == 200 and [i["id"] for i in listed.json()] == [node.id]
            assert http.get("/", follow_redirects=True).status_code == 200  # the console
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{api.url}/api/cartridges", timeout=10)  # not trusted by default

        env = {
            "STRATOS_URL": api.url,
            "STRATOS_USERNAME": "admin",
            "STRATOS_PASSWORD": "tls-pw",
            "STRATOS_STATE_DIR": str(tmp_path),
        }
        listed = stratos(monkeypatch, env, "list-cartridges", "--json")
        assert listed.exit_code == 0, listed.stderr
        assert json.loads(listed.stdout) == []
        generate_self_signed(tmp_path / "other.pem", tmp_path / "other.key")
        distrusted = stratos(
            monkeypatch, {**env, "STRATOS_API_CA": str(tmp_path / "other.pem")}, "list-cartridges", "--json"
        )
        assert distrusted.exit_code == 1 and "CERTIFICATE_VERIFY_FAILED" in distrusted.stderr
        assert distrusted.exception is None or isinstance(distrusted.exception, SystemExit)
    finally:
        stop_together(api.stop, mock.stop)
