"""Use cases: submit, cancel, account, authorise. Edges call these; they call store and backends."""
