"""The audit's TRL side: TRL's own trainers run at fixed parameters, and one case's rows.

:func:`make_trainer` builds ``GRPOTrainer`` / ``RLOOTrainer`` for an :class:`AuditCase`
(with the planted bias where asked); :func:`sample_trl_gradients` runs its
``training_step`` R times and reads ``.grad`` (:class:`GradientSample`);
:func:`audit_case` compares those draws with each exact target and returns the JSON rows.
datasets and trl are imported only when a trainer is built.
"""

from __future__ import annotations

import copy
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch

from bonmath.trl_audit.cases import TRAINERS, AuditCase, targets_for
from bonmath.trl_audit.models import TinySetup
from bonmath.trl_audit.statistics import Z_MATCH, bias_statistics, sampling_law_test
from bonmath.trl_audit.targets import ExactProblem, Target
from bonmath.validation import check_choice, check_count

__all__ = ["GradientSample", "audit_case", "make_trainer", "sample_trl_gradients"]


def make_trainer(
    case: AuditCase,
    setup: TinySetup,
    reward_func: Callable[..., Sequence[float]],
    *,
    num_generations: int,
    groups: int,
    output_dir: str | os.PathLike,
    seed: int = 0,
    temperature: float = 1.0,
):
    """Build TRL's trainer for ``case`` on a fresh copy of the policy.

    Common settings: ``use_cpu=True``, ``bf16=False`` (TRL's default bf16 would
    autocast the float64 model), ``gradient_checkpointing=False`` (no effect on the
    gradient, only on speed), ``per_device_train_batch_size = groups · G`` (``groups``
    groups of G completions of one prompt per step), one accumulation step,
    ``num_iterations = 1`` (on-policy), ``max_completion_length = L``,
    ``report_to="none"``, no saving, ``temperature``; all else TRL's defaults.
    The reference model is loaded by TRL itself from ``setup.reference_path``.

    Examples
    --------
    GRPO ``dr_grpo`` at β = 0.1 with 3 groups of G = 2 completions per step: TRL's
    reference is the saved one, exactly; the policy is a copy; no optimizer is built:

    >>> import tempfile, torch
    >>> from bonmath.trl_audit import AuditCase, build_tiny_setup, count_token_reward
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=3, max_completion_length=2, seed=1)
    >>> case = AuditCase("grpo", dict(loss_type="dr_grpo", beta=0.1))
    >>> trainer = make_trainer(case, setup, count_token_reward(1), num_generations=2, groups=3,
    ...                        output_dir=folder.name + "/trainer")
    >>> trainer.args.loss_type, trainer.args.beta, trainer.args.per_device_train_batch_size
    ('dr_grpo', 0.1, 6)
    >>> all(torch.equal(a, b) for a, b in zip(trainer.ref_model.parameters(), setup.reference.parameters()))
    True
    >>> trainer.model is setup.policy, trainer.optimizer is None
    (False, True)
    >>> folder.cleanup()
    """
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    check_choice(case.trainer, "trainer", TRAINERS)
    G = check_count(num_generations, "num_generations", minimum=2)
    groups = check_count(groups, "groups")
    common: dict[str, Any] = dict(  # keyword arguments of both TRL configs, which check them
        output_dir=str(output_dir), use_cpu=True, bf16=False, fp16=False, report_to="none",
        save_strategy="no", logging_steps=10**9, gradient_checkpointing=False, seed=seed,
        per_device_train_batch_size=groups * G, num_generations=G,
        max_completion_length=setup.max_completion_length, temperature=temperature,
    )
    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if case.trainer == "grpo" else (RLOOConfig, RLOOTrainer)
    args = config_cls(**common, **case.config)
    dataset = Dataset.from_dict({"prompt": [setup.prompt] * groups})
    # TRL types a reward function as returning exactly list[float | None] (list is invariant),
    # so a list[float] return does not match; TRL only iterates the rewards
    trl_reward_func = cast("Callable[..., list[float | None]]", reward_func)
    trainer = trainer_cls(model=copy.deepcopy(setup.policy), reward_funcs=trl_reward_func,
                          args=args,  # type: ignore[arg-type]  # mypy cannot tie config_cls to trainer_cls
                          train_dataset=dataset, processing_class=setup.tokenizer)
    if case.planted:
        _plant_group_mean_bias(trainer, G)
    return trainer


def _plant_group_mean_bias(trainer, num_generations: int) -> None:
    """Scale the advantages the trainer computed by (G-1)/G (see :class:`AuditCase`)."""
    compute = trainer._generate_and_score_completions
    keep = (num_generations - 1) / num_generations

    def planted(inputs):
        output = compute(inputs)
        output["advantages"] = output["advantages"] * keep
        return output

    trainer._generate_and_score_completions = planted


class _RecordingReward:
    """Wraps a reward function and counts the completion ids TRL passes to it."""

    def __init__(self, func: Callable[..., Sequence[float]]) -> None:
        self.func = func
        self.__name__ = getattr(func, "__name__", "reward")
        self.counts: Counter = Counter()

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        self.counts.update(tuple(int(t) for t in ids) for ids in completion_ids)
        return self.func(prompts=prompts, completions=completions, completion_ids=completion_ids, **kwargs)


@dataclass
class GradientSample:
    """R draws of TRL's gradient and the completions it generated for them.

    Attributes
    ----------
    gradients : float64 tensor of shape (R, P)
        ``.grad`` of the policy parameters after each ``training_step``, flattened in
        ``model.parameters()`` order.
    completion_counts : Counter
        Completion (tuple of ids) -> how many times TRL generated it.
    seconds : float

    Examples
    --------
    R = 2 draws of RLOO's gradient, each step one group of G = 2 completions: one row of
    all 6768 parameters per draw, R · groups · G = 4 completions counted:

    >>> import tempfile
    >>> from bonmath.trl_audit import AuditCase, build_tiny_setup, count_token_reward, sample_trl_gradients
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=3, max_completion_length=2, seed=1)
    >>> sample = sample_trl_gradients(AuditCase("rloo", dict(beta=0.05)), setup, count_token_reward(1), repetitions=2,
    ...                               num_generations=2, groups=1, output_dir=folder.name + "/trainer")
    >>> sample.gradients.shape, sum(sample.completion_counts.values()), sample.seconds > 0
    (torch.Size([2, 6768]), 4, True)
    >>> folder.cleanup()
    """

    gradients: torch.Tensor
    completion_counts: Counter
    seconds: float


def sample_trl_gradients(
    case: AuditCase,
    setup: TinySetup,
    reward_func: Callable[..., Sequence[float]],
    *,
    repetitions: int,
    num_generations: int,
    groups: int,
    output_dir: str | os.PathLike,
    seed: int = 0,
    temperature: float = 1.0,
    progress: Callable[[], None] | None = None,
) -> GradientSample:
    """Run TRL's ``training_step`` ``repetitions`` times at fixed parameters and read ``.grad``.

    Each step takes the next generation batch from the trainer's own dataloader and
    goes through ``trainer.training_step`` (generation, reward, advantages, loss,
    backward). Gradients are zeroed before each step; no optimizer exists, so the
    parameters never move.

    Examples
    --------
    Two independent draws at the same parameters differ; ``progress`` is called once a step:

    >>> import tempfile, torch
    >>> from bonmath.trl_audit import AuditCase, build_tiny_setup, count_token_reward
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=3, max_completion_length=2, seed=1)
    >>> steps = []
    >>> sample = sample_trl_gradients(AuditCase("rloo", dict(beta=0.05)), setup, count_token_reward(1), repetitions=2,
    ...                               num_generations=2, groups=1, output_dir=folder.name + "/trainer",
    ...                               progress=lambda: steps.append(1))
    >>> len(steps), bool(torch.equal(sample.gradients[0], sample.gradients[1]))
    (2, False)
    >>> folder.cleanup()
    """
    repetitions = check_count(repetitions, "repetitions", minimum=2)
    recorder = _RecordingReward(reward_func)
    trainer = make_trainer(case, setup, recorder, num_generations=num_generations, groups=groups,
                           output_dir=output_dir, seed=seed, temperature=temperature)
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    loader = trainer.get_train_dataloader()
    batches = iter(loader)
    rows = []
    started = time.perf_counter()
    for _ in range(repetitions):
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        model.zero_grad(set_to_none=True)
        trainer.training_step(model, batch, None)
        rows.append(torch.cat([
            (p.grad if p.grad is not None else torch.zeros_like(p)).detach().reshape(-1).to(torch.float64)
            for p in params
        ]))
        if progress is not None:
            progress()
    return GradientSample(torch.stack(rows), recorder.counts, time.perf_counter() - started)


def audit_case(
    case: AuditCase,
    setup: TinySetup,
    problem: ExactProblem,
    reward_func: Callable[..., Sequence[float]],
    *,
    repetitions: int,
    num_generations: int,
    groups: int,
    output_dir: str | os.PathLike,
    seed: int = 0,
    temperature: float = 1.0,
    targets: Sequence[Target] | None = None,
    progress: Callable[[], None] | None = None,
) -> tuple[list[dict], GradientSample]:
    """Sample TRL's gradient for one case and compare it with each target.

    ``targets`` defaults to :func:`~bonmath.trl_audit.targets_for`; pass others (e.g. a vBoN objective
    with a vBoN reward function) to audit them the same way.

    Returns
    -------
    rows : list of dict
        One per target: the case, the target, :func:`bias_statistics`, the
        :func:`sampling_law_test` of this case's completions, R, versions, and
        ``exact_relative_bias`` = ‖ḡ - c g‖/‖c g‖ with ḡ the exact expectation of TRL's
        gradient derived from its code (the case's ``expected_match`` target; its own
        row checks the derivation against TRL), None where no closed form is known.
    sample : GradientSample

    Examples
    --------
    The planted bias on RLOO with groups of G = 2: TRL's exact expected gradient is then
    (G-1)/G = 1/2 of the objective's, so its exact relative bias for ``sequence_kl`` is 1/2
    whatever the draws (R = 2 draws are far too few for ``bias_z`` to detect it):

    >>> import tempfile
    >>> from bonmath.trl_audit import AuditCase, build_tiny_setup, count_token_reward, exact_problem
    >>> folder = tempfile.TemporaryDirectory()
    >>> setup = build_tiny_setup(folder.name, vocab_size=3, max_completion_length=2, seed=1)
    >>> problem = exact_problem(setup, count_token_reward(1))
    >>> rows, sample = audit_case(AuditCase("rloo", dict(beta=0.05), planted=True), setup, problem,
    ...                           count_token_reward(1), repetitions=2, num_generations=2, groups=1,
    ...                           output_dir=folder.name + "/trainer")
    >>> [(row["target"], row["expected_match"], round(row["exact_relative_bias"], 4)) for row in rows]
    [('sequence_kl', False, 0.5), ('token_kl', False, 0.5008), ('trl_expectation', True, 0.0)]
    >>> rows[0]["R"], rows[0]["sampling_law"]["samples"]
    (2, 4)
    >>> folder.cleanup()
    """
    import trl

    sample = sample_trl_gradients(case, setup, reward_func, repetitions=repetitions,
                                  num_generations=num_generations, groups=groups,
                                  output_dir=output_dir, seed=seed, temperature=temperature,
                                  progress=progress)
    law = sampling_law_test(sample.completion_counts, problem.pair.keys(), problem.pair.policy_log_probs)
    rows = []
    if targets is None:
        targets = targets_for(case, num_generations, setup.eos_token_id)
    scaled = [t.scale(problem.pair, setup.max_completion_length) * problem.gradient(t) for t in targets]
    derived = next((g for t, g in zip(targets, scaled) if t.expected_match), None)
    for target, g in zip(targets, scaled):
        own = (g / g.norm()).unsqueeze(0)
        comparison = bias_statistics(sample.gradients, g, torch.cat([own, problem.directions]))
        rows.append({
            "trainer": case.trainer,
            "config": dict(case.config),
            "planted": case.planted,
            "label": case.label,
            "vbon": None if case.vbon is None else asdict(case.vbon),
            "target": target.name,
            "objective": target.objective,
            "scale_rule": target.scale_rule,
            "scale": target.scale(problem.pair, setup.max_completion_length),
            "expected_match": target.expected_match,
            **comparison,
            "exact_relative_bias": None if derived is None else float((derived - g).norm() / g.norm()),
            "matches": comparison["bias_z"] <= Z_MATCH,
            "R": sample.gradients.shape[0],
            "groups_per_step": groups,
            "num_generations": num_generations,
            "sampling_law": law,
            "seconds": sample.seconds,
            "trl_version": trl.__version__,
            "torch_version": torch.__version__,
        })
    return rows, sample
