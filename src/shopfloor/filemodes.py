"""Files shopfloor's own processes write are theirs alone: 0600 files, 0700 directories.

The data dir holds `temporal.db` (every job's input and result), logs, artifacts and the
pipelines' pidfiles and logs; the `.env` settings file may hold the API token and keys. None
of it is for other users of the machine. `shopfloor up`, `worker` and `controller` set a
umask of 077 as they start (their children inherit it: the dev server's database and its
WAL, the workers' logs), the data dir is made 0700, and a `.env` that others can read is
warned about. Code that creates files for other uids sets their modes explicitly (the sandbox's
work root and run dirs; its zygotes start with the usual 022, see `sandbox.zygote`).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from shopfloor.settings import Settings

PRIVATE_UMASK = 0o077
log = logging.getLogger("shopfloor")


def private_dir(path: Path) -> None:
    """`path` as a directory only its owner may enter: made 0700, or tightened to 0700 when
    it is ours (a data dir made by an earlier version, or by hand)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


def make_private(settings: Settings, *, create_data_dir: bool = False) -> list[str]:
    """What every long-running shopfloor process does first: umask 077, the data dir 0700
    (made when `create_data_dir`, else only tightened if it is there), and warnings (also
    logged) about a group- or world-readable `.env`."""
    os.umask(PRIVATE_UMASK)
    data = settings.data_dir
    if create_data_dir or data.is_dir():
        private_dir(data)
    warnings = []
    env_file = Path(".env")  # where Settings reads it from: the working directory
    try:
        mode = stat.S_IMODE(env_file.stat().st_mode)
    except OSError:
        mode = 0
    if mode & 0o066:
        warnings.append(
            f"{env_file.resolve()} is open to other users (mode {mode:04o}) and may hold "
            "secrets (SHOPFLOOR_API_TOKEN, keys): chmod 600 it"
        )
    for warning in warnings:
        log.warning("%s", warning)
    return warnings
