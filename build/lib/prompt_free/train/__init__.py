"""SeeCoder training (the paper's recipe) as a command: ``python -m prompt_free.train --config cfg.yaml``.

See docs/training.md for the config fields.
"""

from .config import Phase, TrainConfig, config_from_dict, dump_config, load_config
from .models import attach_position_encoding, init_position_encoding, load_backbone_weights, resolve_base_model
from .trainer import SeeCoderTrainModule, Trainer, TrainResult, lr_at, train

__all__ = [
    "Phase",
    "SeeCoderTrainModule",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "attach_position_encoding",
    "config_from_dict",
    "dump_config",
    "init_position_encoding",
    "load_backbone_weights",
    "load_config",
    "lr_at",
    "resolve_base_model",
    "train",
]
