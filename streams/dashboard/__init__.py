"""The worker's dashboard: what it shows (:mod:`.state`) and its web views (:mod:`.views`)."""
