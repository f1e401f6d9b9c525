"""The example service as the demo runs it: ``examples/service/app.py``, shaped by
``shardshape.gateway.install`` (following the routing and plans topics, reporting every
completed request to the requests topic and its queued requests to the planner, the gateway's
Prometheus metrics at ``/metrics``).

Run by ``shardshape demo`` as ``python -m shardshape.infra.demo.service --port N`` with the demo's
``SHARDSHAPE_*`` environment; SIGTERM stops it after the reporter has flushed (the gateway stops
in the app's lifespan).
"""

from __future__ import annotations

import argparse

import uvicorn

from shardshape.core.logs import configure_logging
from shardshape.core.settings import load_settings
from shardshape.infra.demo.examples import example_module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = example_module("app").create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
