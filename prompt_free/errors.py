"""Typed errors of the library.

Every error a user can cause (a wrong file, an odd image, an unknown model name) is one of
these, with a message meant to be shown as it is (the UI turns them into ``gr.Error``).
"""


class PromptFreeError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class CheckpointError(PromptFreeError):
    """A weight file is missing, unreadable, or not what it was said to be."""


class LoraMismatchError(CheckpointError):
    """A LoRA file whose layers the base model lacks, or whose shapes differ from the base model's."""


class ConfigError(PromptFreeError):
    """A model configuration or a ``checkpoints.yaml`` entry is invalid."""


class UnknownModelError(ConfigError):
    """A model name that ``checkpoints.yaml`` does not define."""


class ModelUnavailableError(PromptFreeError):
    """A model's weights can be neither found locally nor downloaded."""


class ChecksumError(ModelUnavailableError):
    """A file's sha256 is not the one pinned in ``checkpoints.yaml`` (wrong or corrupt file)."""


class InputImageError(PromptFreeError):
    """An input image is missing, unreadable or unusable."""


class InvalidSettingError(PromptFreeError):
    """A generation setting (size, steps, guidance ...) is out of range."""


class WorkLimitError(InvalidSettingError):
    """A request asks for more work (pixels x steps x images x models) than this server allows."""


class Cancelled(PromptFreeError):
    """The request was cancelled (Stop, or a client's ``job.cancel()``); it stopped at a step or
    at a boundary of the work around the steps (``prompt_free.cancel``)."""


class TimeLimitError(PromptFreeError):
    """The work before sampling took longer than the server allows (``PFD_PREPARE_LIMIT``)."""


class TierBusyError(PromptFreeError):
    """The model tier (``app.py --ray-replicas``) has every replica working and its queue full."""


class TierUnavailableError(PromptFreeError):
    """The model tier lost the replica that ran a request (it is restarted), or has none yet."""
