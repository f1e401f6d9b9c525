"""A Django app behind ``install_wsgi``: request types from Django's URL resolver
(``resolver_match.route``), handlers reaching their slot, called as a WSGI server calls it."""

from __future__ import annotations

import io

import pytest

from shardshape.core.settings import Settings
from shardshape.gateway.wsgi import install_wsgi
from shardshape.infra.topics import create_topics

django = pytest.importorskip(
    "django", reason="the Django test needs django (pip install -e '.[dev]')"
)


def _items(request, item_id: int):  # type: ignore[no-untyped-def]
    from django.http import JsonResponse

    from shardshape.gateway.pools import current_slot

    slot = current_slot()
    return JsonResponse({"item": item_id, "shard": slot.shard_id if slot else None})


urlpatterns: list = []  # filled below, once Django is configured (this module is the URLconf)


@pytest.mark.broker
def test_django_route_templates_name_the_request_types(settings: Settings) -> None:
    from django.conf import settings as django_settings

    if not django_settings.configured:
        django_settings.configure(
            ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], DEBUG=False, SECRET_KEY="test"
        )
        django.setup()
    from django.core.wsgi import get_wsgi_application
    from django.urls import path

    urlpatterns[:] = [path("items/<int:item_id>/", _items)]
    create_topics(settings)
    application = install_wsgi(get_wsgi_application(), service="shop", settings=settings)
    environ = {
        "REQUEST_METHOD": "GET", "PATH_INFO": "/items/42/", "QUERY_STRING": "",
        "SERVER_NAME": "test", "SERVER_PORT": "80", "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
    }  # fmt: skip
    assert application.request_type(environ) == "GET /items/<int:item_id>/"
    assert application.request_type({**environ, "PATH_INFO": "/nope"}) == "GET <unmatched>"
    answers = []
    body = application(environ, lambda status, headers, exc_info=None: answers.append(status))
    data = b"".join(body)
    body.close()
    assert answers == ["200 OK"] and data == b'{"item": 42, "shard": 0}'
    assert application.pools.state(None).completed == 1
    application.stop()
