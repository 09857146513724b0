"""Providers: where a team's thoughts and code come from (simulated, Anthropic, Google)."""
