"""The apps server without a browser: a request without the token (or with a wrong one) is
refused with 403, never redirected, and there is no login or logout page at all; the token opens
every app, the approval queue among them."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tradeos_lab.apps.server import APPS, HOST, ServedApps, serve_apps
from tradeos_lab.settings import load_settings


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApps]:
    settings = load_settings(data_dir=tmp_path_factory.mktemp("apps-server") / "lab")
    apps = serve_apps(settings)
    yield apps
    apps.stop()


def _get(url: str) -> httpx.Response:
    with httpx.Client(timeout=120, follow_redirects=False) as client:
        return client.get(url)


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("token", [None, "not-the-token-at-all"])
def test_an_app_without_the_token_is_refused_not_redirected_to_a_login_page(
    served: ServedApps, app: str, token: str | None
) -> None:
    plain = served.url(app, token=False)
    response = _get(plain if token is None else f"{plain}?token={token}")
    assert response.status_code == 403, (response.status_code, response.headers)
    assert "location" not in response.headers
    page = response.text.lower()
    assert "password" not in page and "/login" not in page and "tradeos_lab.apps" not in page


@pytest.mark.parametrize("path", ["/login", "/logout", "/voila/login"])
def test_there_is_no_login_or_logout_page(served: ServedApps, path: str) -> None:
    for url in (f"{served.base_url}{path}", f"{served.base_url}{path}?token={served.token}"):
        response = _get(url)
        assert response.status_code in (403, 404), (url, response.status_code)
        assert "password" not in response.text.lower()


def test_a_file_request_without_the_token_is_refused_not_redirected(served: ServedApps) -> None:
    response = _get(f"{served.base_url}/voila/files/approvals.ipynb")
    assert response.status_code in (403, 404), response.status_code
    assert "location" not in response.headers


def test_the_token_opens_the_approval_queue(served: ServedApps) -> None:
    assert served.urls()["approvals"].startswith(f"http://{HOST}:{served.port}/voila/render/")
    response = _get(served.urls()["approvals"])
    assert response.status_code == 200, response.status_code
    assert "ApprovalsPanel" not in response.text  # sources stripped
