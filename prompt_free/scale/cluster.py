"""Start or join the Ray cluster the tier and the batch run on.

Every Ray worker must import the same ``prompt_free`` as the process that started it (a checkout
is not installed; a second checkout beside it must not be picked up), and see the same
``PFD_*`` / ``HF_*`` settings: both go to the workers through the job's runtime environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional

from ..extras import require

# What a worker must see as the starting process does (offline, limits, thread counts ...).
FORWARDED_PREFIXES = ("PFD_", "HF_", "GRADIO_ANALYTICS", "OMP_NUM_THREADS", "TRANSFORMERS_")


def package_root() -> str:
    """The folder holding the ``prompt_free`` package this process imported."""
    return str(Path(__file__).resolve().parents[2])


def worker_env() -> Dict[str, str]:
    """The environment variables every worker gets: the package's folder first on PYTHONPATH,
    and the settings of this process."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_PREFIXES)}
    path = [package_root()] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    return env


def connect(address: Optional[str] = None, num_cpus: Optional[int] = None, what: str = "--ray-replicas"):
    """``ray.init`` once per process: a new local cluster (``address`` None; ``num_cpus`` caps it)
    or the cluster at ``address`` (``auto``: the one ``ray start`` runs on this machine). Returns
    the ``ray`` module. A missing Ray is a ``MissingExtraError`` naming the serve extra."""
    require("serve", what)
    import ray

    if not ray.is_initialized():
        options = dict(runtime_env={"env_vars": worker_env()}, include_dashboard=False,
                       log_to_driver=False, configure_logging=False)
        if address is None:
            options["num_cpus"] = num_cpus
        ray.init(address=address, **options)
    return ray
