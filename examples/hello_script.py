"""An agent-written script: prints progress, writes a report into out/ (→ an artifact)."""

import json
import os
import platform
import time

for step in range(3):
    print(f"step {step}: thinking…", flush=True)
    time.sleep(0.5)

report = {"python": platform.python_version(), "answer": 42}
with open(os.path.join(os.environ.get("SHOPFLOOR_OUT", "out"), "report.json"), "w") as f:
    json.dump(report, f)
print("wrote out/report.json")
