"""Which pipeline services are the operator's monitoring pipeline (`SHOPFLOOR_MONITORING_PIPELINE`):
those the network filter lets reach the metrics ports (docs/security.md).

A service is one when its pipeline has that name *and* the service is, field for field, the
one in the operator's definition file of that name (the definition directories: shipped ones
and `SHOPFLOOR_PIPELINE_DIRS`, read again at each start). Anyone who may start pipelines can
send a definition of their own under the same name; it gets nothing unless it is the
operator's, command, environment and working directory alike.
"""

from __future__ import annotations

import logging

from shopfloor.kinds.pipeline.definition import known_definitions
from shopfloor.kinds.pipeline.models import ServiceRef
from shopfloor.settings import Settings

log = logging.getLogger("shopfloor.metrics")


def is_monitoring_service(settings: Settings, ref: ServiceRef) -> bool:
    if not settings.monitoring_pipeline or ref.pipeline != settings.monitoring_pipeline:
        return False
    known, _ = known_definitions(settings)
    found = known.get(ref.pipeline)
    expected = found[1].service(ref.service.name) if found else None
    if expected is None or expected != ref.service:
        log.warning(
            "pipeline %s: service %s is not the one in the operator's definition: it gets no "
            "access to metrics ports",
            ref.pipeline,
            ref.service.name,
        )
        return False
    return True
