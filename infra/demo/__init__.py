"""``shardshape demo``: the whole system on one machine, learning from a live workload.

The embedded broker (or ``SHARDSHAPE_KAFKA_BOOTSTRAP``), the topics, a worker with the
example pools, the example service behind the shaping middleware reporting to Kafka, and its
tenants' load (or a trace replayed); a terminal view of what the worker learns, the dashboard
on the worker's web port, and a summary at the end. See :mod:`shardshape.infra.demo.run`.
"""
