"""Request types of the sidecar and WSGI gateways: routes files, normalisation, the bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from shardshape.gateway.route_names import OTHER, RouteNames, RoutesFileError


def test_templates_come_first_then_normalised_paths() -> None:
    names = RouteNames(["GET /items/{id}", "POST /items", "* /static/{rest:path}"])
    assert names("GET", "/items/abc") == "GET /items/{id}"
    assert names("POST", "/items") == "POST /items"
    assert names("PUT", "/items/7") == "PUT /items/{id}"  # no PUT template: normalised
    assert names("GET", "/static/css/site.css") == "GET /static/{rest:path}"
    assert names("GET", "/static") == "GET /static"  # {rest:path} needs a segment
    assert names("GET", "/v2/users/me") == "GET /v2/users/me"  # nothing id-like


def test_distinct_request_types_are_bounded() -> None:
    names = RouteNames(max_routes=3)
    made = {names("GET", f"/reports/{word}") for word in ("a", "b", "c", "d", "e")}
    assert made == {"GET /reports/a", "GET /reports/b", "GET /reports/c", f"GET {OTHER}"}
    assert names("GET", "/reports/a") == "GET /reports/a"  # known ones stay


def test_a_routes_file_is_read_or_refused_with_the_fix(tmp_path: Path) -> None:
    good = tmp_path / "routes.toml"
    good.write_text('routes = ["GET /items/{id}"]\n')
    assert RouteNames.from_file(good)("GET", "/items/x") == "GET /items/{id}"
    for text in ('routes = "GET /"\n', "nothing = 1\n", 'routes = ["/items"]\n', "[x\n"):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(RoutesFileError, match=r"routes = \["):
            RouteNames.from_file(bad)
