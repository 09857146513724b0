"""Chimera: one team per LLM provider on a brief, streamed live over gRPC and WebSocket."""

__version__ = "0.1.0"
