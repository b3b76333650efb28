"""HSI's benchmarks: each figure measured beside a raw floor, in the same run, on the same machine.

`python -m benchmarks [names…] [--quick]` runs them (see `benchmarks/README.md`):

- `throughput` (B1): files/s through detect, batch, analyze and project;
- `latency` (B2): a file written into a camera folder → its event visible in `GET /api/events`;
- `replay` (B3): rebuilding every projection from the streams;
- `query` (B4): `GET /api/events` under 50 concurrent clients;
- `memory` (B5): the RSS of `hsi up`, idle and while files flow through it;
- `detection` (B6): detection throughput of `hsi up`'s defaults beside onnxruntime alone;
- `accuracy` (B7): what the embedded detector finds in 1080p frames, by detection mode.

The floor of a figure is the same work done without HSI's framework (raw redis-py and psycopg),
so that the ratio says what the framework costs on this machine, whatever the machine is (B6:
onnxruntime alone doing the same passes); B7's floor is the detector's single full-frame pass.
"""
