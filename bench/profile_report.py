"""Summarise a py-spy collapsed-stack file (`py-spy record -f raw`): the functions with the most samples,
by own time and by inclusive time.

    python bench/profile_report.py FILE [--top 25] [--match TEXT]
"""

from __future__ import annotations

import argparse
from collections import Counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default=None, help="only stacks containing this text")
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in open(args.file):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if args.match and args.match not in stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    print(f"{total} samples")
    for title, counter in (("own", own), ("inclusive", inclusive)):
        print(f"-- {title}")
        for frame, n in counter.most_common(args.top):
            print(f"{100 * n / total:5.1f}%  {frame[:160]}")


if __name__ == "__main__":
    main()
