"""The rolling rehearsal's timings, in one place: Kubernetes' rollout as the manifests set
it (readiness probe, endpoint propagation, preStop, grace period) and the app's drain bound.
Each is a `rehearse --rolling` option; these are the defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass

READINESS_PERIOD_SECONDS = 2.0  # readinessProbe.periodSeconds
READINESS_TIMEOUT_SECONDS = 2.0  # readinessProbe.timeoutSeconds
READINESS_FAILURE_THRESHOLD = 1  # readinessProbe.failureThreshold
READINESS_SUCCESS_THRESHOLD = 1  # readinessProbe.successThreshold
ENDPOINT_LAG_SECONDS = 1.0  # a pod's readiness or deletion reaching the Service's routing
PRESTOP_SLEEP_SECONDS = 5.0  # lifecycle.preStop sleep, before SIGTERM
DRAIN_TIMEOUT_SECONDS = 20.0  # the app's own bound on its drain after SIGTERM
TERMINATION_GRACE_PERIOD_SECONDS = 30.0  # terminationGracePeriodSeconds: then SIGKILL
MAX_SURGE = 1  # strategy.rollingUpdate: one new server is ready before an old one goes
MAX_UNAVAILABLE = 0


@dataclass(frozen=True)
class Timings:
    """One rollout's timings (seconds), the manifests' by default."""

    probe_period: float = READINESS_PERIOD_SECONDS
    probe_timeout: float = READINESS_TIMEOUT_SECONDS
    failure_threshold: int = READINESS_FAILURE_THRESHOLD
    success_threshold: int = READINESS_SUCCESS_THRESHOLD
    endpoint_lag: float = ENDPOINT_LAG_SECONDS
    prestop_sleep: float = PRESTOP_SLEEP_SECONDS
    drain_timeout: float = DRAIN_TIMEOUT_SECONDS
    grace_period: float = TERMINATION_GRACE_PERIOD_SECONDS

    def as_dict(self) -> dict[str, float]:
        return asdict(self) | {"max_surge": MAX_SURGE, "max_unavailable": MAX_UNAVAILABLE}
