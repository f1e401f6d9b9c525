"""The example service as the demo runs it: ``examples/service/app.py`` behind the shaping
middleware, following the routing and plans topics, reporting every completed request to the
requests topic and its queued requests to the planner, with the gateway's Prometheus metrics
at ``/metrics``.

Run by ``shardshape demo`` as ``python -m shardshape.infra.demo.service --port N`` with the demo's
``SHARDSHAPE_*`` environment; SIGTERM stops it after the reporter has flushed.
"""

from __future__ import annotations

import argparse
import os
import socket

import uvicorn

from shardshape.gateway.prometheus import GatewayMetrics, with_metrics
from shardshape.gateway.reporter import Reporter
from shardshape.infra.demo.examples import example_module
from shardshape.infra.logs import configure_logging
from shardshape.infra.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    example = example_module("app")
    gateway_id = f"{socket.gethostname()}:{os.getpid()}"
    with Reporter(settings, gateway_id=gateway_id) as reporter:
        metrics = GatewayMetrics(example.SERVICE, reporter=reporter)
        app = example.create_app(
            settings, report=metrics.observing(reporter.report), reporter=reporter
        )
        metrics.pools = app.state.pools
        uvicorn.run(with_metrics(app, metrics), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
