"""The environment variables the real providers read, in a module that imports no SDK.

Keeping them here lets the CLI decide real-or-simulated (and say why) without
paying the SDKs' import time for commands that never talk to a provider.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

ANTHROPIC_API_KEY_ENV = "ANTHROPIC_API_KEY"
# Read by the anthropic SDK itself when no base URL is given.
ANTHROPIC_BASE_URL_ENV = "ANTHROPIC_BASE_URL"
# google-genai's order: GOOGLE_API_KEY wins when both are set.
GOOGLE_API_KEY_ENVS = ("GOOGLE_API_KEY", "GEMINI_API_KEY")
# Read by google-genai itself when no base URL is given.
GOOGLE_BASE_URL_ENV = "GOOGLE_GEMINI_BASE_URL"


def api_key(env: Mapping[str, str], names: Sequence[str]) -> str:
    """The first of ``names`` set (non-blank) in ``env``, stripped; ``""`` if none is."""
    return next((env[name].strip() for name in names if env.get(name, "").strip()), "")
