"""Fake provider APIs on loopback that speak the providers' real wire formats.

- :mod:`chimera.fakes.server`: the scripted HTTP/1.1 server both build on
  (:class:`~chimera.fakes.server.Reply`, :class:`~chimera.fakes.server.Pause`,
  request recording, connection-close tracking).
- :mod:`chimera.fakes.sse`: server-sent events and the 200 reply that streams them
  (both APIs stream SSE).
- :mod:`chimera.fakes.anthropic_api`: ``POST /v1/messages`` with Anthropic SSE.
- :mod:`chimera.fakes.gemini_api`: ``POST /{version}/models/{model}:streamGenerateContent?alt=sse``.
"""
