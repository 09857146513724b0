"""Scraping a real ``/metrics`` listener and reading it with prometheus-client's own parser."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch(port: int, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        body: bytes = response.read()
    return body.decode()


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape(port: int) -> Samples:
    return parse(await asyncio.to_thread(fetch, port))


async def scrape_until(port: int, done: Callable[[Samples], bool], within: float = 15) -> Samples:
    """Scrapes until ``done`` holds (a value the server updates once a client has gone)."""
    async with asyncio.timeout(within):
        while True:
            samples = await scrape(port)
            if done(samples):
                return samples
            await asyncio.sleep(0.05)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)
