"""Models as a service: an OpenAI-compatible gateway over open-weight models.

Requests under ``/v1`` carry a project's API key; the gateway checks the key's
limits and the project's token budget, picks a replica of the model (or the
in-process engine), forwards the request, and charges the tokens to the project.
"""
