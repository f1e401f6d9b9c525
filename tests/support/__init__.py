"""What tests share, by job: starting processes, the broker, waiting, workers, the demo, plans,
serving apps, the shared trace. Fixtures stay in ``conftest.py``; everything a test imports
comes from here (or from a helper beside the tests of one folder only)."""
