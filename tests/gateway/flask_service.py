"""A Flask service with the gateway installed, served by gunicorn in tests/gateway/test_wsgi.py
(``gunicorn -k gthread --threads 64 tests.gateway.flask_service:app``).

- ``GET /items/<int:item_id>?ms=N``: a read answering after N ms (default 30), naming the
  shard of the slot it ran in (``current_slot()``);
- ``GET /exports/<name>?ms=N``: an export answering after N ms (default 150);
- ``GET /healthz``: unshaped.
"""

from __future__ import annotations

import gc
import time

from flask import Flask, jsonify, request

from shardshape.gateway.pools import current_slot
from shardshape.gateway.wsgi import install_wsgi

SERVICE = "flaskshop"

app = Flask(__name__)


def _sleep(default_ms: float) -> None:
    time.sleep(min(float(request.args.get("ms", default_ms)), 60_000) / 1000)


@app.get("/items/<int:item_id>")
def item(item_id: int):  # type: ignore[no-untyped-def]
    _sleep(30)
    slot = current_slot()
    return jsonify(item=item_id, shard=slot.shard_id if slot is not None else None)


@app.get("/exports/<name>")
def export(name: str):  # type: ignore[no-untyped-def]
    _sleep(150)
    return jsonify(report=name)


@app.get("/healthz")
def healthz() -> str:
    return "ok"


gateway = install_wsgi(app, service=SERVICE, unshaped_paths={"/healthz"})

# What the worker loaded at start lives as long as it does: keep it out of the collector's full
# passes (about 150 ms over its ~90k objects on the test machine, pausing every thread), as the
# sidecar does, so latencies measure shaping, not the collector.
gc.freeze()
