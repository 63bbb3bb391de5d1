"""A closed, finely tessellated box as binary STL: a large but valid part for tests."""

from __future__ import annotations

import struct


def box_stl(n: int, size: float = 40.0) -> bytes:
    """A `size` mm cube resting on z=0, each face an n×n grid of quads (12·n² triangles,
    50 bytes each: n=92 is a 5 MB file)."""
    g = [-size / 2 + size * i / n for i in range(n + 1)]
    tris = []
    for axis in range(3):
        for sign in (-1, 1):
            for i in range(n):
                for j in range(n):
                    quad = []
                    for u, v in (
                        (g[i], g[j]),
                        (g[i + 1], g[j]),
                        (g[i + 1], g[j + 1]),
                        (g[i], g[j + 1]),
                    ):
                        p = [0.0, 0.0, 0.0]
                        p[axis] = sign * size / 2
                        p[(axis + 1) % 3] = u
                        p[(axis + 2) % 3] = v
                        p[2] += size / 2
                        quad.append(p)
                    if sign < 0:
                        quad.reverse()
                    tris += [(quad[0], quad[1], quad[2]), (quad[0], quad[2], quad[3])]
    out = bytearray(80) + struct.pack("<I", len(tris))
    for tri in tris:
        out += struct.pack("<3f", 0.0, 0.0, 0.0)
        for p in tri:
            out += struct.pack("<3f", *p)
        out += b"\0\0"
    return bytes(out)
