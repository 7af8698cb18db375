from __future__ import annotations

import pytest
import torch

from napari_mupd.errors import ConditionError, ConfigError
from napari_mupd.model import (
    FlowMatchEulerScheduler,
    FlowMatchHeunScheduler,
    combine_guidance,
    guidance_passes,
    scheduler_from_config,
)

SCHEDULERS = [FlowMatchEulerScheduler, FlowMatchHeunScheduler]


@pytest.mark.parametrize("cls", SCHEDULERS)
@pytest.mark.parametrize("steps", [1, 3])
def test_straight_paths_are_integrated_exactly(cls, steps: int) -> None:
    """For one data point x0 the flow-matching velocity is (x - x0) / t: paths are straight."""
    x0 = torch.tensor([0.3, -1.2])
    sched = cls(shift=3.0)
    sched.set_timesteps(steps)
    x, evals = torch.tensor([1.0, 2.0]), []

    def velocity(sample: torch.Tensor, t: float) -> torch.Tensor:
        evals.append(t)
        return (sample - x0) / t

    for i in range(steps):
        x = sched.step(velocity, x, i)
    torch.testing.assert_close(x, x0)
    assert len(evals) == (steps if cls is FlowMatchEulerScheduler else 2 * steps - 1)


def test_heun_is_second_order_on_a_curved_flow() -> None:
    """dx/dt = x integrated from t=1 to t=0.1: Heun's error is far below Euler's."""
    errors = {}
    for cls in SCHEDULERS:
        sched = cls()
        sched.set_timesteps(8)
        sched.timesteps = torch.linspace(1.0, 0.1, 9, dtype=torch.float64)
        x = torch.tensor([1.0], dtype=torch.float64)
        for i in range(8):
            x = sched.step(lambda s, t: s, x, i)
        errors[cls] = abs(float(x) - float(torch.exp(torch.tensor(-0.9))))
    assert errors[FlowMatchHeunScheduler] < errors[FlowMatchEulerScheduler] / 10


def test_shift_moves_steps_towards_noise() -> None:
    plain, shifted = FlowMatchEulerScheduler(), FlowMatchEulerScheduler(shift=3.0)
    plain.set_timesteps(4)
    shifted.set_timesteps(4)
    assert plain.timesteps[0] == shifted.timesteps[0] == 1.0
    assert plain.timesteps[-1] == shifted.timesteps[-1] == 0.0
    assert (shifted.timesteps[1:-1] > plain.timesteps[1:-1]).all()
    assert (shifted.timesteps[1:] < shifted.timesteps[:-1]).all()


def test_scheduler_config_round_trip() -> None:
    s = scheduler_from_config(FlowMatchHeunScheduler(shift=2.5).config)
    assert isinstance(s, FlowMatchHeunScheduler) and s.shift == 2.5
    with pytest.raises(ConfigError, match="unknown scheduler"):
        scheduler_from_config({"_class_name": "DDIM"})


def test_guidance_passes() -> None:
    assert guidance_passes([], 5.0) == [()]
    assert guidance_passes(["rna", "text"], 1.0) == [("text", "rna")]
    assert guidance_passes(["rna", "text"], 3.0) == [(), ("text", "rna")]
    assert guidance_passes(["image", "text"], {"text": 2.0}) == [(), ("text",), ("image",)]
    assert guidance_passes(["rna"], {"rna": 1.0}) == [("rna",)]
    # a virtual stain's source H&E is guided like a stream: its unconditional pass lacks it
    assert guidance_passes(["source"], 2.0) == [(), ("source",)]
    assert guidance_passes(["source", "text"], {"source": 3.0}) == [(), ("text",), ("source",)]
    with pytest.raises(ConditionError, match="known: text, rna, image, source"):
        guidance_passes(["source"], {"sauce": 2.0})


def test_guidance_arithmetic() -> None:
    vu, vt, vi = torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([-2.0])
    joint = combine_guidance([vu, vt], [(), ("text", "image")], 2.5)
    assert joint.item() == pytest.approx(1.0 + 2.5 * 2.0)
    per = combine_guidance([vu, vt, vi], [(), ("text",), ("image",)], {"text": 2.0})
    assert per.item() == pytest.approx(1.0 + 2.0 * 2.0 + 1.0 * -3.0)
    assert combine_guidance([vt], [("text",)], 7.0).item() == 3.0
