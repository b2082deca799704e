"""Knowledge distillation: a smaller student trained on the teacher's softened outputs."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_modelopt.errors import NoEffectError, ParameterError, SpecError
from pytest_modelopt.parameters import param
from pytest_modelopt.registry import register_technique
from pytest_modelopt.variants.base import BuildContext, Variant

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class DistilledParams:
    """Parameters of ``distilled``."""

    student: Callable[[], Any] | str | None = param(
        None,
        "a callable returning the student, or a timm model name; else "
        "`spec.student`; else the teacher at `width`",
    )
    width: float = param(
        0.5, "channel width of the derived student (torch-pruning removes `1 - width`)"
    )
    temperature: float = param(
        4.0, "`T` of the KD loss `alpha * T² * KL(soft) + (1 - alpha) * cross-entropy`"
    )
    alpha: float = param(
        0.7, "`alpha` of the KD loss `alpha * T² * KL(soft) + (1 - alpha) * cross-entropy`"
    )
    max_steps: int = param(
        300, "the time box in steps: `max_steps` or `max_seconds`, whichever comes first"
    )
    max_seconds: float = param(
        60.0, "the time box in seconds: `max_steps` or `max_seconds`, whichever comes first"
    )
    lr: float = param(1e-3, "Adam learning rate")


@register_technique(
    "distilled",
    backend="torch",
    description="a smaller student trained on the teacher's soft targets (KD), time-boxed",
    params=DistilledParams,
)
def build_distilled(ctx: BuildContext) -> Variant:
    """Train a smaller student on the teacher's soft targets (knowledge distillation).

    The student: ``student`` (a callable returning a module, or a timm model name), else the
    spec's ``student``, else the teacher narrowed to ``width`` of its channels (torch-pruning).

    Loss: ``alpha * T^2 * KL(student/T || teacher/T) + (1 - alpha) * cross-entropy`` on labelled
    batches (pure KD where labels are None); training stops at ``max_steps`` or
    ``max_seconds``, whichever comes first.
    """
    import torch

    from pytest_modelopt.torchtools import fine_tune, parameter_count, training_batches
    from pytest_modelopt.variants.pruning import torch_variant

    batches = training_batches(ctx.spec, ctx.technique)
    teacher = ctx.model.eval()
    student, origin = make_student(ctx, teacher)
    teacher_params, student_params = parameter_count(teacher), parameter_count(student)
    if student_params >= teacher_params:
        raise NoEffectError(
            f"distilled: the student ({origin}, {student_params} parameters) is not smaller "
            f"than the teacher {ctx.spec.name} ({teacher_params})"
        )
    temperature, alpha = float(ctx.params["temperature"]), float(ctx.params["alpha"])
    if temperature <= 0 or not 0 <= alpha <= 1:
        raise ParameterError("distilled: temperature must be > 0 and alpha in [0, 1]")
    targets = {id(inputs): _soft(teacher, inputs) for inputs, _ in batches}

    def kd_loss(outputs: Any, labels: Any, inputs: Any) -> Any:
        soft = torch.nn.functional.kl_div(
            torch.log_softmax(outputs / temperature, dim=-1),
            torch.softmax(targets[id(inputs)] / temperature, dim=-1),
            reduction="batchmean",
        ) * (temperature**2)
        if labels is None:
            return soft
        hard = torch.nn.functional.cross_entropy(outputs, labels)
        return alpha * soft + (1 - alpha) * hard

    ctx.log(
        f"{ctx.spec.name}[distilled]: training {origin} ({student_params} parameters) for up "
        f"to {ctx.params['max_steps']} steps / {ctx.params['max_seconds']} s"
    )
    start = time.perf_counter()
    steps = fine_tune(
        student,
        batches,
        steps=int(ctx.params["max_steps"]),
        lr=float(ctx.params["lr"]),
        loss=kd_loss,
        max_seconds=float(ctx.params["max_seconds"]),
    )
    if steps == 0:
        raise NoEffectError("distilled: the student took no training step")
    return torch_variant(
        ctx,
        student,
        whole_module=True,
        details={
            "student": origin,
            "teacher_parameters": teacher_params,
            "student_parameters": student_params,
            "steps": steps,
            "train_seconds": round(time.perf_counter() - start, 2),
            "temperature": temperature,
            "alpha": alpha,
        },
    )


def make_student(ctx: BuildContext, teacher: nn.Module) -> tuple[nn.Module, str]:
    """Return the untrained student and a description of where it came from.

    The ``student`` parameter, else the spec's ``student`` (a timm model name, created with the
    teacher's number of classes, or a callable returning a module), else a copy of the teacher
    with ``1 - width`` of its channels pruned away.
    """
    from pytest_modelopt.torchtools import call_model, output_tensor

    given = ctx.params["student"] or ctx.spec.student
    if isinstance(given, str):
        import timm
        import torch

        with torch.no_grad():
            classes = output_tensor(call_model(teacher, ctx.spec.example_input)).shape[-1]
        return timm.create_model(given, pretrained=False, num_classes=classes), f"timm {given}"
    if given is not None:
        if not callable(given):
            raise ParameterError(
                f"distilled: student must be a timm model name or a callable returning a "
                f"module, got {type(given).__name__}"
            )
        try:
            return given(), getattr(given, "__name__", type(given).__name__)
        except Exception as error:
            raise SpecError(
                f"distilled: the student factory for {ctx.spec.name} raised "
                f"{type(error).__name__}: {error}"
            ) from error
    width = float(ctx.params["width"])
    if not 0 < width < 1:
        raise ParameterError(f"distilled: width must be in (0, 1), got {width}")
    from pytest_modelopt.registry import Requirements
    from pytest_modelopt.variants.pruning import prune_channels

    Requirements(packages=("torch_pruning",)).check(ctx.hardware)
    student = copy.deepcopy(teacher)
    prune_channels(student, ctx.spec.example_input, 1 - width, model_name=ctx.spec.name)
    return student, f"{ctx.spec.name} at width {width:g} (channels pruned, then distilled)"


def _soft(teacher: nn.Module, inputs: Any) -> Any:
    import torch

    from pytest_modelopt.torchtools import call_model, output_tensor

    with torch.no_grad():
        return output_tensor(call_model(teacher, inputs))
