"""Fake provider APIs on loopback that speak the providers' real wire formats.

- :mod:`tests.fakes.server`: the scripted HTTP/1.1 server both build on
  (:class:`~tests.fakes.server.Reply`, :class:`~tests.fakes.server.Pause`,
  request recording, connection-close tracking).
- :mod:`tests.fakes.anthropic_api`: ``POST /v1/messages`` with Anthropic SSE.
- :mod:`tests.fakes.gemini_api`: ``POST /{version}/models/{model}:streamGenerateContent?alt=sse``.
"""
