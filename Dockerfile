# One image for the controller and the workers (the command picks the part).
FROM python:3.11-slim

# OSMesa: offscreen MuJoCo rendering for simulation jobs.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libosmesa6 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[sim]'

# Not root: inside a container the pids cgroup is read-only, so the per-script process cap
# falls back to RLIMIT_NPROC, which the kernel ignores for uid 0.
RUN useradd --create-home --uid 1000 shopfloor && mkdir -p /data && chown shopfloor /data
USER shopfloor
ENV SHOPFLOOR_DATA_DIR=/data \
    MUJOCO_GL=osmesa
EXPOSE 8000
CMD ["shopfloor", "controller"]
