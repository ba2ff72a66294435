"""CUDA graphs of one whole guided step: the ControlNets, the UNet and the guidance (the fast
path's last part; ``FastPath(graphs=True)``, on with the compile path on CUDA, off with
``PFD_CUDA_GRAPHS=0``).

One step is captured once per shape (batch, latent size, extra channels, context length, the
set of ControlNets acting) and replayed for every step of every later run of that shape: the
step's inputs are copied into the graph's fixed input tensors, the graph replays every kernel
with no Python and no launch overhead, and the guided noise prediction comes out of its fixed
output tensor. The timestep, the ControlNet scales, the guidance scale, the context and the
embedded hints are inputs too, so a new seed, slider value or reference replays the same graph;
the context is copied in only when the run's ``StepContext`` gives another tensor object.

A graph reads the weights at the addresses it was captured with. So:
  * the UNet a graph runs is a ``WeightSlot``: device tensors of one UNet architecture, into
    which each run copies its base model's weights (a device-to-device copy, once per run).
    Switching base models, a LoRA fused for one run, or a model coming back from the RAM tier
    at new addresses all leave the captured graphs valid;
  * a ControlNet is identified by the addresses of its weights (``weights_address``): one that
    moved, or another model, is captured anew. Graphs hold no reference to any model.

On the CPU (tests) nothing is captured: the same function runs over the same fixed tensors
directly, so everything but the capture itself is checked there, bit for bit against the
eager loop. A capture that fails is logged once and the runs go on without graphs.
"""

from __future__ import annotations

import copy
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch

from .memory import is_out_of_memory
from .steps import guided_eps

log = logging.getLogger(__name__)

MAX_GRAPHS = 8  # captured steps kept (least recently used leave first)
WARMUP_RUNS = 2  # runs on a side stream before a capture (kernel choice, lazy init, compiles)


def module_tensors(m: torch.nn.Module) -> List[torch.Tensor]:
    return list(m.parameters()) + list(m.buffers())


def weights_address(m: torch.nn.Module) -> Tuple[int, ...]:
    """Where ``m``'s weights live: a graph captured with them reads exactly these addresses."""
    return tuple(t.data_ptr() for t in module_tensors(m))


def architecture(m: torch.nn.Module) -> Tuple:
    """Names, shapes, dtypes and device of ``m``'s weights: two UNets with the same one fit one
    slot (the memory layout may differ: a copy converts it)."""
    return (type(m).__name__,) + tuple(
        (name, tuple(t.shape), t.dtype, str(t.device))
        for name, t in list(m.named_parameters()) + list(m.named_buffers()))


class WeightSlot:
    """Device tensors for one UNet architecture that every graphed run copies its UNet into."""

    def __init__(self, unet: torch.nn.Module):
        self.architecture = architecture(unet)
        self.module = copy.deepcopy(unet).eval().requires_grad_(False)  # the UNet's device, dtype and layout

    def fill(self, unet: torch.nn.Module) -> torch.nn.Module:
        """The slot holding ``unet``'s weights now (as fused or moved for this run). The slot's
        tensors are looked up each time: the compile path lays them out channels_last once."""
        with torch.no_grad():
            for d, s in zip(module_tensors(self.module), module_tensors(unet)):
                d.copy_(s, non_blocking=True)
        return self.module


@dataclass
class ControlSlot:
    """One ControlNet in a captured step: the model's residual function and its fixed inputs."""

    controlnet: Optional[torch.nn.Module] = field(metadata={"owned": False})  # only during a run
    embedding: torch.Tensor = None  # the hint embedded once per run
    scale: torch.Tensor = None  # 0-dim float32


@dataclass
class GraphedStep:
    """The fixed tensors of one captured step and its graph (None on the CPU: run directly)."""

    x: torch.Tensor  # the UNet batch's latents, in the models' dtype
    t: torch.Tensor  # 0-dim timestep
    context: torch.Tensor
    guidance: Optional[torch.Tensor]  # 0-dim float32; None for unguided runs
    extra: Optional[torch.Tensor]  # inpainting channels concatenated to the UNet input
    controls: List[ControlSlot]
    out: torch.Tensor  # the guided noise prediction, float32
    # The model functions, during a run only (a graph keeps addresses, never a model):
    unet: object = field(default=None, metadata={"owned": False})  # the slot's forward (compiled or not)
    residuals: object = field(default=None, metadata={"owned": False})  # ``fast.controlnet_residuals``
    context_of: object = field(default=None, metadata={"owned": False})  # the context now copied in ``context``
    graph: Optional[object] = None
    run: int = -1  # the run whose per-run inputs are loaded

    def body(self) -> None:
        """The guided step over the fixed tensors (``steps.guided_eps``, the step every strategy
        runs): what is captured, and what runs on the CPU."""
        controls = self.controls
        eps = guided_eps(
            lambda k: self.residuals(controls[k].controlnet, self.x, self.t, self.context, controls[k].embedding,
                                     controls[k].scale),
            lambda unet_in, down, mid: self.unet(unet_in, self.t, encoder_hidden_states=self.context,
                                                 down_block_additional_residuals=down,
                                                 mid_block_additional_residual=mid, return_dict=False)[0],
            self.x, self.extra, range(len(controls)), self.guidance)
        self.out.copy_(eps)  # ``out`` is allocated outside the capture: no pool reuses it

    def release_models(self) -> None:
        self.unet = self.residuals = self.context_of = None
        for c in self.controls:
            c.controlnet = None


class StepGraphs:
    """The captured guided steps of one engine and the UNet weight slot they read.

    Steps are captured when the models are on CUDA; elsewhere (the CPU, for tests) each step's
    function runs directly over the same fixed tensors. ``captures`` counts the steps set up,
    ``replays`` the steps run through them."""

    remade_on_eviction = True  # ``memory.Budget.evict`` releases it (the next run captures anew), never moves it

    def __init__(self):
        self.slot: Optional[WeightSlot] = None
        self._steps: "OrderedDict[Tuple, GraphedStep]" = OrderedDict()
        self._pool = None
        self._run = 0
        self._model_ids = {}  # (weight addresses, architecture) of a ControlNet -> a small int for keys
        self.captures = 0
        self.replays = 0
        self.failed: Optional[str] = None  # why graphs are off for this engine (a failed capture)

    # -- memory: the engine accounts for this object like a model and calls ``release`` to evict it
    def slot_bytes_needed(self, unet: torch.nn.Module) -> int:
        if self.slot is not None and self.slot.architecture == architecture(unet):
            return 0
        return sum(t.numel() * t.element_size() for t in module_tensors(unet))

    def prepare(self, unet: torch.nn.Module) -> None:
        """Make the slot for ``unet``'s architecture (a new one drops the graphs of the old)."""
        if self.slot is None or self.slot.architecture != architecture(unet):
            self.release()
            self.slot = WeightSlot(unet)

    @property
    def capture(self) -> bool:
        return self.slot is not None and self.slot.module.device.type == "cuda"

    def release(self) -> None:
        """Drop the slot and every captured step (their memory returns to the allocator)."""
        self.slot = None
        self.drop_steps()

    def drop_steps(self) -> None:
        """Drop every captured step and their memory pool, keep the slot (out of memory: the
        pool is working memory the retry may need)."""
        self._steps.clear()
        self._model_ids.clear()
        self._pool = None

    def model_id(self, m: torch.nn.Module) -> int:
        """A small number for ``m``'s weights where they are now (once per run, not per step):
        the same number means a captured step reads the right weights."""
        return self._model_ids.setdefault((weights_address(m), architecture(m)), len(self._model_ids))

    def __len__(self) -> int:
        return len(self._steps)

    # -- runs
    def new_run(self, unet: torch.nn.Module) -> torch.nn.Module:
        """Start a run on ``unet``: its weights copied into the slot; returns the slot module."""
        self.prepare(unet)
        self._run += 1
        return self.slot.fill(unet)

    def step(self, key: Tuple, run, active: Tuple[int, ...], x: torch.Tensor, i: int) -> torch.Tensor:
        """The guided noise prediction of step ``i``, a copy of the fixed output tensor (schedulers
        such as PNDM keep earlier steps' predictions; the next replay overwrites the output). ``run`` (``fast.GraphParts``) makes a new ``key``'s ``GraphedStep``
        (``make_step``), gives it the run's models and copies in its per-run inputs (``load_run``:
        once per run) and the step's latents and timestep (``load_step``)."""
        s = self._steps.get(key)
        fresh = s is None
        if fresh:
            s = run.make_step(active, x)
        else:
            self._steps.move_to_end(key)
        if s.run != self._run:
            run.load_run(s, active)
            s.run = self._run
        run.load_step(s, x, i)
        if fresh:
            if self.capture and self.failed is None:
                self._capture(s)
            self._steps[key] = s
            self.captures += 1
            while len(self._steps) > MAX_GRAPHS:
                self._steps.popitem(last=False)
        if s.graph is not None:
            s.graph.replay()
        else:
            s.body()
        self.replays += 1
        return s.out.clone()

    def end_run(self) -> None:
        """Drop the references to this run's models (a graph keeps only addresses)."""
        for s in self._steps.values():
            s.release_models()

    def _capture(self, s: GraphedStep) -> None:
        """Capture ``s`` after warm-up runs on a side stream. Out of memory is raised (the engine
        frees and retries); any other failure turns graphs off for this engine, logged once,
        and the step runs uncaptured."""
        try:
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_RUNS):
                    s.body()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            # thread_local: other threads (a model loading for another request) may use the device meanwhile
            with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
                s.body()
        except Exception as e:  # noqa: BLE001 - graphs are an optimisation: the step runs without one
            if is_out_of_memory(e):
                raise
            self.failed = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            log.warning("CUDA graphs are off for this engine: capturing a step failed (%s)", self.failed)
            return
        if self._pool is None:
            self._pool = graph.pool()  # later captures share it: steps never replay concurrently
        s.graph = graph
