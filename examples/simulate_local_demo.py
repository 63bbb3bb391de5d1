"""Runs examples/ramp_box.py through the simulation pipeline in this process (no Temporal).

.venv/bin/python examples/simulate_local_demo.py [out_dir]
"""

import sys
import time
from pathlib import Path

from shopfloor.kinds.simulation.local import simulate_local
from shopfloor.kinds.simulation.models import SimOptions


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out/ramp_box")
    source = (Path(__file__).parent / "ramp_box.py").read_text()
    t0 = time.perf_counter()
    result = simulate_local(
        source,
        SimOptions(duration_s=5.0),
        out_dir=out,
        heartbeat=lambda details: print("heartbeat", details),
    )
    print(result.model_dump_json(indent=2))
    print(
        f"{result.outcome} in {time.perf_counter() - t0:.2f} s wall (first run includes "
        "importing build123d and mujoco)"
    )


if __name__ == "__main__":
    main()
