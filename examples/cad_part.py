"""A build123d script (runs warm: the worker has build123d imported already). Exports a STEP."""

import os

from build123d import Box, Cylinder, Pos, export_step

bracket = Box(60, 40, 8) + Pos(26, 0, 24) * Box(8, 40, 40) - Pos(-10, 0, 0) * Cylinder(5, 10)
out = os.environ.get("SHOPFLOOR_OUT", "out")
export_step(bracket, os.path.join(out, "bracket.step"))
print(f"bracket volume: {bracket.volume:.0f} mm^3, {len(bracket.faces())} faces")
