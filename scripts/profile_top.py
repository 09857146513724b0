#!/usr/bin/env python
"""The top of a py-spy profile: its share of samples per thread, per function (self)
and per function with what it calls (inclusive).

    BENCH_PYSPY=/tmp/prof .venv/bin/python scripts/bench.py --only one-job --events 20000 --repeat 1
    .venv/bin/python scripts/profile_top.py /tmp/prof/chimera-*.txt
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

_ADDRESS = re.compile(r"\(\d+\)|0x[0-9a-f]+")
_LINE = re.compile(r":\d+\)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", help="py-spy record --format raw output (collapsed stacks)")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(args.profile) as lines:
        for line in lines:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            samples = int(count)
            thread, *frames = stack.split(";")
            names = [_LINE.sub(")", frame) for frame in frames]
            threads[_ADDRESS.sub("", thread).strip()] += samples
            total += samples
            if names:
                own[names[-1]] += samples
            for name in set(names):
                inclusive[name] += samples
    print(f"{total} samples")
    for title, counts in (("threads", threads), ("self", own), ("inclusive", inclusive)):
        print(f"-- {title}")
        for name, samples in counts.most_common(args.top):
            print(f"{samples / total:6.1%}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
