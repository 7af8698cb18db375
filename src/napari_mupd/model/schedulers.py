"""Flow-matching samplers (Euler, Heun) with a shifted time grid; swappable on the pipeline.

Convention (rectified flow, as diffusers' FlowMatch schedulers and SD3): ``t = 1`` is
noise and ``t = 0`` data, ``x_t = (1 - t) x_0 + t * noise``, and the network predicts
the velocity ``v = dx_t/dt = noise - x_0``. Sampling integrates from t = 1 down to 0.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from napari_mupd.errors import ConditionError, ConfigError

VelocityFn = Callable[[Tensor, float], Tensor]


class FlowMatchScheduler(ABC):
    """Time grid ``t_0 = 1 > t_1 > ... > t_n = 0``, optionally shifted towards noise.

    ``shift`` > 1 spends more steps at high noise (``t' = s t / (1 + (s - 1) t)``, SD3),
    which helps few-step sampling. `step` advances the sample from ``t_i`` to ``t_{i+1}``.
    """

    evals_per_step: ClassVar[int] = 1

    def __init__(self, shift: float = 1.0) -> None:
        if shift <= 0:
            raise ConfigError(f"shift must be positive, got {shift}")
        self.shift = shift
        self.timesteps = torch.ones(1)

    @property
    def config(self) -> dict[str, Any]:
        return {"_class_name": type(self).__name__, "shift": self.shift}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FlowMatchScheduler:
        """Rebuild from `config` (ignores ``_class_name``; see `scheduler_from_config`)."""
        return cls(**{k: v for k, v in config.items() if not k.startswith("_")})

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Build the grid of ``num_inference_steps + 1`` times in `timesteps` (float64)."""
        if num_inference_steps < 1:
            raise ConditionError(
                f"num_inference_steps must be at least 1, got {num_inference_steps}"
            )
        t = torch.linspace(1.0, 0.0, num_inference_steps + 1, dtype=torch.float64)
        self.timesteps = self.shift * t / (1 + (self.shift - 1) * t)

    @abstractmethod
    def step(self, velocity: VelocityFn, sample: Tensor, index: int) -> Tensor:
        """The sample at ``timesteps[index + 1]`` from the one at ``timesteps[index]``."""


class FlowMatchEulerScheduler(FlowMatchScheduler):
    """First-order Euler: ``x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i)``.

    With one step this is the single-step read-out ``x_0 = noise - v(noise, 1)``.
    """

    def step(self, velocity: VelocityFn, sample: Tensor, index: int) -> Tensor:
        t, t_next = float(self.timesteps[index]), float(self.timesteps[index + 1])
        return sample + (t_next - t) * velocity(sample, t)


class FlowMatchHeunScheduler(FlowMatchScheduler):
    """Second-order Heun (trapezoid); the last step, which ends at t = 0, is Euler (as EDM)."""

    evals_per_step = 2

    def step(self, velocity: VelocityFn, sample: Tensor, index: int) -> Tensor:
        t, t_next = float(self.timesteps[index]), float(self.timesteps[index + 1])
        v = velocity(sample, t)
        pred = sample + (t_next - t) * v
        if t_next == 0.0:
            return pred
        return sample + (t_next - t) * 0.5 * (v + velocity(pred, t_next))


SCHEDULERS: dict[str, type[FlowMatchScheduler]] = {
    cls.__name__: cls for cls in (FlowMatchEulerScheduler, FlowMatchHeunScheduler)
}


def scheduler_from_config(config: dict[str, Any]) -> FlowMatchScheduler:
    """The scheduler named by ``config["_class_name"]``, rebuilt from the rest."""
    name = config.get("_class_name", "FlowMatchEulerScheduler")
    if name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}")
    return SCHEDULERS[name].from_config(config)
