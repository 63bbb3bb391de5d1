"""Reference simulation scene: a box slides down a fixed ramp into a goal zone.

Scene conventions (millimetres, z up, the floor's top at z=0): `result` is a Compound whose
children carry labels; `fixed` lists parts that do not move; parts labelled `zone_goal_*`,
`zone_forbid_*`, `zone_start_*` are regions, not bodies.
"""

import math

from build123d import Box, Compound, Plane, Polygon, Pos, Rot, extrude

RAMP_LENGTH, RAMP_HEIGHT, WIDTH, BOX = 300, 220, 120, 40

# A wedge: high at x=0, reaching the floor at x=RAMP_LENGTH (about 36 degrees, steep enough
# for the box to overcome the default friction of 0.5).
ramp = extrude(
    Plane.XZ * Polygon((0, 0), (RAMP_LENGTH, 0), (0, RAMP_HEIGHT), align=None),
    amount=WIDTH / 2,
    both=True,
)
ramp.label = "ramp"

# The box rests on the slope near the top: tilted like the slope, lifted along its normal.
slope = math.atan2(RAMP_HEIGHT, RAMP_LENGTH)
x0 = 60
z0 = RAMP_HEIGHT - x0 * math.tan(slope)
box = Pos(x0 + BOX / 2 * math.sin(slope), 0, z0 + BOX / 2 * math.cos(slope)) * (
    Rot(0, math.degrees(slope), 0) * Box(BOX, BOX, BOX)
)
box.label = "box"

goal = Pos(RAMP_LENGTH + 130, 0, 40) * Box(220, 160, 80)
goal.label = "zone_goal_landing"

result = Compound(children=[ramp, box, goal], label="ramp_box")
fixed = ["ramp"]
