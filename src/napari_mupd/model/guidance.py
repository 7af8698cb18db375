"""Classifier-free guidance over the conditions, joint or per modality.

The conditions are the attention streams (text, RNA, reference image) and, for a virtual
stain, the source H&E (``"source"``, its stain features beside the latents, as image
guidance in InstructPix2Pix): the unconditional pass of a virtual stain is the stain the
model would draw without seeing the source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from napari_mupd.errors import ConditionError
from napari_mupd.model.attention import STREAMS

GuidanceScale = float | Mapping[str, float]
#: What guidance can steer: the attention streams and the virtual stain's source H&E.
CONDITIONS: tuple[str, ...] = (*STREAMS, "source")


def guidance_passes(present: Sequence[str], guidance_scale: GuidanceScale) -> list[tuple[str, ...]]:
    """The condition subsets the network is evaluated with, in order.

    - no condition, or a float scale of 1: one pass with every given condition;
    - a float scale g != 1: ``[(), present]`` (unconditional, joint);
    - a dict (per modality): ``[(), (m1,), (m2,), ...]``, one pass per given modality
      (a single modality with scale 1 needs only its own pass).
    """
    present = tuple(m for m in CONDITIONS if m in present)
    if isinstance(guidance_scale, Mapping):
        unknown = set(guidance_scale) - set(CONDITIONS)
        if unknown:
            raise ConditionError(
                f"guidance_scale: unknown modality {sorted(unknown)}; "
                f"known: {', '.join(CONDITIONS)}"
            )
        if not present:
            return [()]
        if len(present) == 1 and float(guidance_scale.get(present[0], 1.0)) == 1.0:
            return [present]
        return [(), *((m,) for m in present)]
    if not present or float(guidance_scale) == 1.0:
        return [present]
    return [(), present]


def combine_guidance(
    velocities: Sequence[Tensor], passes: Sequence[tuple[str, ...]], guidance_scale: GuidanceScale
) -> Tensor:
    """Combine the per-pass velocities of `guidance_passes`.

    Joint (float g): ``v = v_u + g (v_c - v_u)``. Per modality (dict, compositional as in
    Composable Diffusion): ``v = v_u + sum_m g_m (v_m - v_u)`` with ``g_m`` defaulting
    to 1 for a given modality missing from the dict.
    """
    if len(passes) == 1:
        return velocities[0]
    v_u = velocities[0]
    if not isinstance(guidance_scale, Mapping):
        return v_u + float(guidance_scale) * (velocities[1] - v_u)
    out = v_u
    for (m,), v in zip(passes[1:], velocities[1:], strict=True):
        out = out + float(guidance_scale.get(m, 1.0)) * (v - v_u)
    return out
