"""The model tier's shape (``app.py --ray-*`` options): light, no Ray import, so the app can
parse and check it before it starts anything."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional


@dataclass(frozen=True)
class TierOptions:
    """How the tier is shaped. ``replicas``: how many at the start (and the fewest when
    ``max_replicas`` is larger: then Serve autoscales towards ``target_ongoing`` requests per
    replica). ``max_ongoing``: requests one replica holds at once (the engine runs one at a time);
    ``max_queued``: requests the front end may have waiting for a replica before it answers "busy".
    ``cpus``: the CPU share of a replica without a GPU (its torch threads too)."""

    replicas: int = 1
    max_replicas: Optional[int] = None
    target_ongoing: float = 1.0
    max_ongoing: int = 1
    max_queued: int = 4
    cpus: float = 1.0
    gpus: Optional[float] = None  # None: one per replica when this machine has CUDA, else none
    max_base_models: int = 2  # base models a replica keeps as routing keys (the engine's own limit)
    health_period_s: float = 10.0

    @property
    def most_replicas(self) -> int:
        return max(self.replicas, self.max_replicas or 0)

    @property
    def capacity(self) -> int:
        """Requests the tier takes from one front end before it answers busy."""
        return self.most_replicas * self.max_ongoing + self.max_queued

    def deployment_options(self) -> Dict[str, Any]:
        gpus = self.gpus if self.gpus is not None else (1.0 if _cuda_here() else 0.0)
        actor = {"num_cpus": self.cpus, "num_gpus": gpus} if gpus else {"num_cpus": self.cpus}
        options: Dict[str, Any] = dict(ray_actor_options=actor, max_ongoing_requests=self.max_ongoing,
                                       max_queued_requests=self.max_queued,
                                       health_check_period_s=self.health_period_s, health_check_timeout_s=30.0)
        if self.max_replicas and self.max_replicas > self.replicas:
            options["autoscaling_config"] = {"min_replicas": self.replicas, "max_replicas": self.max_replicas,
                                             "target_ongoing_requests": self.target_ongoing}
        else:
            options["num_replicas"] = self.replicas
        return options


def _cuda_here() -> bool:
    import torch

    return torch.cuda.is_available()


