"""The HTTP API: thin routers over services; errors as JSON."""
