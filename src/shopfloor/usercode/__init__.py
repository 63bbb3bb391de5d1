"""Running user code (scripts, simulation scenes) end to end, for the kinds that do.

A kind calls one entry, `run_user_code`, with what its run is (`UserCode`: prepare, launch,
collect); its worker bundle gets the shared zygotes (`zygotes`, through
`WorkerContext.shared`) and adds what running user code needs beside its own queue
(`kind_work`: the hand-off queue and drop activity of a local-first kind). The rest is
private: the host's containment (`_containment`), the zygotes (`_zygotes`), run slots
(`_slots`), the hand-off and adoption state machine (`_handoff`), the attempt as Temporal
tells it (`_attempt`), the runs kept between attempts (`_runs`), one run (`_run`) and the
worker bundle's part (`_plugin`).
"""

from shopfloor.usercode._containment import (
    UID_LOCK_DIR,
    Containment,
    containment,
    metrics_ports,
    protected_ports,
    refuse_over_ceilings,
)
from shopfloor.usercode._handoff import Custody, Handoff, IllegalTransition, handoff_queue
from shopfloor.usercode._plugin import kind_work
from shopfloor.usercode._run import (
    Launch,
    Then,
    UserCode,
    UserCodeRun,
    cold_module_argv,
    cold_python_argv,
    run_user_code,
)
from shopfloor.usercode._runs import Runs
from shopfloor.usercode._slots import RunSlots
from shopfloor.usercode._zygotes import Zygotes, zygotes

__all__ = [
    "UID_LOCK_DIR",
    "Containment",
    "Custody",
    "Handoff",
    "IllegalTransition",
    "Launch",
    "RunSlots",
    "Runs",
    "Then",
    "UserCode",
    "UserCodeRun",
    "Zygotes",
    "cold_module_argv",
    "cold_python_argv",
    "containment",
    "handoff_queue",
    "kind_work",
    "metrics_ports",
    "protected_ports",
    "refuse_over_ceilings",
    "run_user_code",
    "zygotes",
]
