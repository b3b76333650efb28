"""`python -m benchmarks.worker [--shard i/n]`: `hsi worker` (every stage) with B1's detector.

`hsi worker` builds its detector from the settings, and none of the configurable ones costs
nothing: the embedded one runs a model, RT-DETR's is an HTTP upload of a file that B1 never
writes. This entry point runs what `hsi worker --stage all --shard i/n` runs — the same boot
(settings from the environment, logging, telemetry, the Redis check and migrations), the same
`Pipeline` until SIGTERM — with `fakes.FixedDetector` answering a car and a person, as B1's
in-process pipeline does. Settings come from the environment only (no `.env` file).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from benchmarks.fakes import CAR_AND_PERSON, FixedDetector
from hsi.app.pipeline import ALL_STAGES, PipelineOptions
from hsi.app.runner import run_worker
from hsi.settings.model import Settings
from streams.stages.runtime import CameraSelection


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("--shard", default=None, help="only shard i/n of the cameras")
    args = parser.parse_args(argv)
    options = PipelineOptions(stages=ALL_STAGES, selection=CameraSelection.parse(None, args.shard))
    run_worker(Settings(_env_file=None), options, detector=FixedDetector(CAR_AND_PERSON))
    return 0


if __name__ == "__main__":
    sys.exit(main())
