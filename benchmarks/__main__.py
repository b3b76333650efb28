"""`python -m benchmarks [names…] [--quick]`: run the benchmarks and print the results table.

Names: throughput (B1), latency (B2), replay (B3), query (B4), memory (B5), detection (B6),
accuracy (B7), scaleout (B8); none means all. The servers are embedded ones in a temporary
folder, or those
named by HSI_BENCH_REDIS_URL and HSI_BENCH_DATABASE_URL; they are started only when a chosen
benchmark needs them (accuracy does not). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from types import ModuleType

from benchmarks import accuracy, detection, latency, memory, query, replay, scaleout, throughput
from benchmarks.environment import Servers, servers
from benchmarks.options import Options, Size
from benchmarks.report import Figure, table

BENCHMARKS: dict[str, ModuleType] = {
    "throughput": throughput,
    "latency": latency,
    "replay": replay,
    "query": query,
    "memory": memory,
    "detection": detection,
    "accuracy": accuracy,
    "scaleout": scaleout,
}
ALIASES = {f"b{index}": name for index, name in enumerate(BENCHMARKS, start=1)}

Runner = Callable[[Servers, Options], list[Figure]]


class _OneLine(logging.Formatter):
    """Log records on one line each, an exception as its type and message (a benchmark's output
    stays readable when FastStream logs a failed read while the pipeline stops)."""

    _STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
        "message",
        "asctime",
    }

    def format(self, record: logging.LogRecord) -> str:
        text = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname} {record.name}: "
        text += record.getMessage()
        extra = {k: v for k, v in vars(record).items() if k not in self._STANDARD}
        if extra:
            text += " " + " ".join(f"{key}={value!r}" for key, value in extra.items())
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            text += f" ({type(error).__name__}: {error})"
        return text


def _logging() -> None:
    """Warnings and errors on stderr, one line each, unless logging is set up already."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="name",
        help=f"benchmarks to run: {', '.join(BENCHMARKS)} (or b1…b8); default all",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 4 minutes)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per benchmark (default 3)")
    parser.add_argument(
        "--memory-files",
        type=int,
        default=None,
        help="files through hsi up in the memory benchmark (a multiple of 200)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="after the timed rounds, check the results (replay: `hsi replay --verify` against "
        "the projector's tables, and the floor's tables against them)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def selected(names: Sequence[str]) -> list[str]:
    chosen = []
    for name in names or BENCHMARKS:
        key = ALIASES.get(name.lower(), name.lower())
        if key not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        if key not in chosen:
            chosen.append(key)
    return chosen


def needs_servers(name: str) -> bool:
    """Whether a benchmark uses Redis and PostgreSQL (a module says no by NEEDS_SERVERS)."""
    return bool(getattr(BENCHMARKS[name], "NEEDS_SERVERS", True))


def run(
    names: Sequence[str],
    options: Options,
    on_start: Callable[[Servers | None], None] | None = None,
    on_done: Callable[[str, float], None] | None = None,
) -> list[Figure]:
    """Run the named benchmarks on one set of servers, started only if one of them needs them
    (`on_start` gets None otherwise); every figure, in order."""
    figures: list[Figure] = []
    wanted = any(needs_servers(name) for name in names)
    with servers() if wanted else nullcontext() as found:
        if on_start is not None:
            on_start(found)
        for name in names:
            started = time.monotonic()
            if found is None:  # no benchmark of this run needs servers
                figures.extend(BENCHMARKS[name].run(None, options))
            else:
                runner: Runner = BENCHMARKS[name].run
                figures.extend(runner(found, options))
            if on_done is not None:
                on_done(name, time.monotonic() - started)
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    _logging()
    names = selected(args.names)
    size = Size.SMOKE if args.smoke else Size.QUICK if args.quick else Size.FULL
    options = Options(
        size=size, rounds=args.rounds, memory_files=args.memory_files, check=args.check
    )
    command = "python -m benchmarks " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"$ {command.strip()}")
    print(
        f"# {os.cpu_count()} cores, Python {platform.python_version()}, {size.value} sizes, "
        f"{options.rounds} rounds",
        flush=True,
    )
    started = time.monotonic()

    def servers_up(found: Servers | None) -> None:
        print(f"# servers: {'none needed' if found is None else found.describe()}", flush=True)

    def progress(name: str, seconds: float) -> None:
        print(f"# {name}: {seconds:.0f} s", file=sys.stderr, flush=True)

    figures = run(names, options, servers_up, progress)
    print()
    print(table(figures))
    print(f"\n# {time.monotonic() - started:.0f} s in all")
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(f) for f in figures], indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
