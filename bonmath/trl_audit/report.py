"""The audit's reporting: verdicts, the markdown of docs/trl_audit.md, and merging partial runs.

:func:`verdict` words one configuration's rows; :func:`markdown_report` renders the whole
results JSON (``benchmarks/trl_gradients.py --out``) as docs/trl_audit.md;
:func:`merge_results` merges the rows of an ``--only`` run into full results. These read
only the JSON: nothing here runs TRL or enumerates.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from bonmath.trl_audit.cases import VBoNSpec

__all__ = ["MERGE_KEYS", "markdown_report", "merge_results", "verdict"]


def verdict(rows: Sequence[dict]) -> str:
    """One sentence on one case's rows (all targets of one configuration).

    A target is "consistent" when bias_z <= 5 (no bias detectable at this R). Where
    the exact expectation of TRL's gradient is known and confirmed by its own row,
    the exact relative bias against every other target is given as well.

    Examples
    --------
    >>> rows = [
    ...     dict(target="sequence_kl", objective="E[r]", expected_match=False, matches=False, bias_z=12.3,
    ...          relative_bias=0.251, exact_relative_bias=0.25),
    ...     dict(target="trl_expectation", objective="0.75 x (E[r])", expected_match=True, matches=True, bias_z=0.4,
    ...          relative_bias=0.01, exact_relative_bias=0.0)]
    >>> verdict(rows)
    'biased for sequence-level `E[r]` by 25.0% exactly (z = 12.3); consistent with derived TRL expectation `0.75 x (E[r])` (z = 0.4).'
    """
    names = {"sequence_kl": "sequence-level", "token_kl": "per-token (prefix fixed)",
             "trl_expectation": "derived TRL expectation",
             "centred_sequence_kl": "sequence-level with TRL's (G-1)/G reward factor",
             "vbon": "exact vBoN", "vbon_estimated": "vBoN of the estimated CDF",
             "vbon_bound": "finite vBoN bound", "vbon_scaled": "exact vBoN over N-1"}
    derived = next((r for r in rows if r["expected_match"]), None)
    confirmed = derived is not None and derived["matches"]
    parts = []
    for row in rows:
        what = f"{names.get(row['target'], row['target'])} `{row['objective']}`"
        exact = row["exact_relative_bias"] if confirmed and row is not derived else None
        if row["matches"]:
            text = f"consistent with {what} (z = {row['bias_z']:.1f})"
            if exact is not None:
                text += f", though exactly biased by {100 * exact:.1f}%"
        else:
            size = f"{100 * exact:.1f}% exactly" if exact is not None else f"{100 * row['relative_bias']:.0f}%"
            text = f"biased for {what} by {size} (z = {row['bias_z']:.1f})"
        parts.append(text)
    if derived is not None and not derived["matches"]:
        parts.append("**the derived expectation failed: the derivation or the audit is wrong**")
    return "; ".join(parts) + "."


def markdown_report(results: dict) -> str:
    """docs/trl_audit.md: the setup, how to read it, and the verdict table, from the results JSON.

    One table row per configuration; its number columns show the configuration's
    first target (the objective it claims: ``sequence_kl``, or the vBoN objective of a
    vBoN case), the verdict covers every target the configuration was compared with.

    Examples
    --------
    A results dict with the keys ``benchmarks/trl_gradients.py`` writes, holding one row
    of illustrative statistics for RLOO at β = 0.05 (``meta["exact"]`` is the
    ``summary`` of an :class:`~bonmath.trl_audit.ExactProblem`, the rows those of
    :func:`~bonmath.trl_audit.audit_case`); the report's title and its table row:

    >>> exact = dict(support_size=7, kl_policy_reference=0.106, truncated_mass=0.767, expected_length=1.858,
    ...              reward_values=[0.0, 1.0, 2.0])
    >>> config = dict(vocab_size=3, max_completion_length=2, reward_value=1.0, temperature=1.0, random_directions=3)
    >>> meta = dict(trl_version="1.16.0", transformers_version="5.24.0", torch_version="2.13.0", config=config,
    ...             exact=exact, pooled_sampling_law=dict(samples=240, chi2=5.2, dof=6, p_value=0.52),
    ...             repetitions=60, groups=1, num_generations=2, wall_seconds=30.0, cpu_seconds=29.0, threads=1,
    ...             cpu_count=2)
    >>> row = dict(trainer="rloo", config={"beta": 0.05}, planted=False, vbon=None, label="RLOO, beta=0.05",
    ...            target="sequence_kl", objective="E[r] - 0.05 KL(π‖π_ref)", scale_rule="one", expected_match=True,
    ...            matches=True, bias_z=0.8, relative_bias=0.031, relative_bias_se=0.029, cosine=0.9995,
    ...            exact_relative_bias=0.0)
    >>> lines = markdown_report({"meta": meta, "rows": [row]}).splitlines()
    >>> print(lines[0])
    # TRL 1.16.0: its own gradients against exact ones
    >>> print(lines[-1])
    | RLOO | beta=0.05 | E[r] - 0.05 KL(π‖π_ref) (c: one) | 3.1% (2.9%) | 0.8 | 0.9995 | consistent with sequence-level `E[r] - 0.05 KL(π‖π_ref)` (z = 0.8). |
    """
    meta, rows = results["meta"], results["rows"]
    exact, law = meta["exact"], meta["pooled_sampling_law"]
    G = meta["num_generations"]
    cfg = meta["config"]
    by_case: dict[str, list[dict]] = {}
    for row in rows:
        by_case.setdefault(row["label"], []).append(row)
    lines = [
        f"# TRL {meta['trl_version']}: its own gradients against exact ones",
        "",
        "Generated by `python benchmarks/trl_gradients.py --out docs/trl_gradients.json "
        "--markdown docs/trl_audit.md` (do not edit by hand).",
        "",
        f"**Setup.** TRL {meta['trl_version']}, transformers {meta['transformers_version']}, torch "
        f"{meta['torch_version']}, CPU, float64 models (TRL computes the log-probabilities of its loss in "
        f"float32 whatever the model dtype). A tiny GPT-2 reference (V = {cfg['vocab_size']} tokens incl. "
        f"EOS) and a perturbed policy, KL(π‖π_ref) = {exact['kl_policy_reference']:.3f}; completions of at "
        f"most L = {cfg['max_completion_length']} tokens, {exact['support_size']} of them "
        f"({100 * exact['truncated_mass']:.0f}% of the policy mass truncated at L), E|y| = "
        f"{exact['expected_length']:.3f}. Reward: {cfg['reward_value']:g} × (number of token `a`), values "
        f"{exact['reward_values']} (ties). Each configuration runs TRL's own `training_step` "
        f"R = {meta['repetitions']} times at fixed parameters (generation, reward, advantages, loss, "
        f"backward; no optimizer), each step {meta['groups']} groups of G = {G} completions, and the mean "
        f"of the R gradients read from `.grad` is compared with exact gradients by enumeration. Wall time "
        f"{meta['wall_seconds']:.0f} s ({meta['cpu_seconds']:.0f} s of CPU) on {meta['threads']} thread(s) of "
        f"a {meta['cpu_count']}-core machine shared with other jobs.",
        "",
        f"**Sampling law.** All {law['samples']} completions TRL generated, against the enumerated law "
        f"(temperature {cfg['temperature']:g}, no top-k/top-p, EOS, L): χ² = {law['chi2']:.1f} on "
        f"{law['dof']} degrees of freedom, p = {law['p_value']:.3g} (per configuration in the JSON).",
        "",
        "**Reading the table.** *relative bias* = ‖E ĝ_TRL − c g‖/‖c g‖ with g = ∇(−J) the exact gradient "
        "of the target and c > 0 the constant of TRL's loss normalisation (in brackets: the noise floor "
        "sqrt(tr Cov/R)/‖c g‖; a relative bias of a few noise floors or less is not significant). *z*: "
        "the largest |t| of E ĝ_TRL − c g along the target's own direction, the exact gradients of E[r], "
        "E[(r − E r)/|y|] and the three KL kinds, and "
        f"{cfg['random_directions']} random directions, Bonferroni-adjusted and written as a two-sided "
        "normal z; a target is *consistent* when z ≤ 5 (no bias detectable at this R, which is less than unbiased). "
        "Where TRL's exact expected gradient is known (`trl_expectation`, or RLOO's own objective) and its "
        "row confirms it, the verdict also gives the *exact* relative bias against every other target. "
        "*cosine* = cos(E ĝ_TRL, g), free of the scale c.",
        "",
        "**Targets.** `sequence_kl`: J = E[r] − β KL(π_θ‖π_ref) over whole completions (what the "
        "configuration claims to optimise). `token_kl`: J = E[r] − β Σ_t KL at each position with the "
        "prefix distribution held fixed (reverse KL(π_t‖ref_t) for bias-corrected k3 and RLOO, forward "
        "KL(ref_t‖π_t) for plain k3). `trl_expectation`: the exact expectation of TRL's gradient derived "
        f"from its code where it has a closed form: GRPO's group mean includes the sample's own reward, so "
        f"the reward part is scaled by (G−1)/G = {(G - 1) / G:g}; `grpo` divides each completion by its "
        "length. `centred_sequence_kl`: the same (G−1)/G reward factor with the sequence-level KL; it "
        "isolates the KL question. Loss normalisations, i.e. c: `dr_grpo` divides by G·L "
        "(c = 1/L, unbiased up to that scale); `dapo` and `bnpo` divide by the batch's token count, a "
        "random normaliser (compared at c = 1/E|y|; on one process with one accumulation step they are "
        "the same estimator); `grpo` divides each completion by |y| (a length-weighted objective; "
        "compared at c = E[1/|y|]); RLOO averages sequences (c = 1). At β = 0 TRL computes no KL term, "
        "so `use_bias_correction_kl` has no effect and only its default (True) is run. The planted rows "
        f"multiply RLOO's leave-one-out advantages by (G−1)/G, which equals centring on the group mean "
        f"including the sample's own reward: a bias of {100 / G:.0f}% of ‖g‖ that the audit must detect.",
        "",
        *_vbon_paragraphs(meta),
        "| trainer | config | target (claimed) | relative bias (noise) | z | cosine | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for group in by_case.values():
        main = group[0]
        config = ", ".join(f"{k}={v}" for k, v in main["config"].items())
        if main.get("vbon"):
            spec = VBoNSpec(**main["vbon"])
            config += f", **reward: {spec.name}**"
        if main["planted"]:
            config += " **(planted bias)**"
        cells = [main["trainer"].upper(), config, f"{main['objective']} (c: {main['scale_rule']})",
                 f"{100 * main['relative_bias']:.1f}% ({100 * main['relative_bias_se']:.1f}%)",
                 f"{main['bias_z']:.1f}", f"{main['cosine']:.4f}", verdict(group)]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def _vbon_paragraphs(meta: dict) -> list[str]:
    """The markdown paragraphs on the vBoN rows and on runs merged into the results (may be none)."""
    lines = []
    vbon = meta.get("vbon") or {}
    if vbon:
        specs = list(vbon.values())
        ns = sorted({v["n"] for v in specs})
        estimated = [v for v in specs if v["num_ref_samples"] is not None]
        kls = "; ".join(f"N = {v['n']}: KL(π‖π_N) = {v['kl_policy_bon']:.3f}" for v in specs
                        if v["objective"] == "exact" and v["num_ref_samples"] is None)
        text = (
            f"**vBoN rows.** The base reward is the one above; TRL trains on "
            f"`bonmath.trl.VBoNReward(base, N, ...)`, N ∈ {ns}. Exact CDF (`exact_cdf`, the enumerated "
            f"reference law): R_N = log π_N − log π_ref, so RLOO at β = 1 should estimate −∇KL(π_θ‖π_N) "
            f"({kls}). "
        )
        for v in estimated:
            text += (
                f"Estimated CDF (N = {v['n']}): M = {v['num_ref_samples']} reference completions drawn "
                f"once (seeded) from the reference, rewards {v['reference_rewards']}; the reward R̂_N "
                f"describes π̂_N ∝ π_ref e^(R̂_N), KL(π‖π̂_N) = {v['kl_policy_estimated_bon']:.3f} against "
                f"KL(π‖π_N) = {v['kl_policy_bon']:.3f}: RLOO should estimate −∇KL(π_θ‖π̂_N), and its bias "
                "for −∇KL(π_θ‖π_N) is known exactly. "
            )
        text += (
            "Bound: reward log F̃ at β = 1/(N−1). Every completion has policy mass, the lowest reward "
            "level included, so the bound L = log N + (N−1) E[log F_lt] − KL is −∞; `VBoNReward` uses "
            "the exact R_N on that level (log F̃ = (R_N − log N)/(N−1)), which is the finite bound L̃ of "
            "`bonmath.vbon_finite_lower_bound`, and the target is ∇L̃/(N−1). GRPO `dr_grpo` at β = 1 with "
            "R_N is compared with −∇KL(π_θ‖π_N) and with its derived expectation (the (G−1)/G reward "
            "factor and the per-token KL). In these rows the test directions of *z* use the vBoN reward "
            "in place of r."
        )
        lines += [text, ""]
    for part in meta.get("merged_runs", []):
        law = part["pooled_sampling_law"]
        lines += [
            f"**Merged run.** The {len(part['labels'])} configurations of `--only {part['selection']}` were "
            f"run separately (`--only {part['selection']}`, same settings and seeds as in the full run) and "
            f"merged into these results (`--from-json PART --merge`, `bonmath.trl_audit.merge_results`): wall time {part['wall_seconds']:.0f} s "
            f"({part['cpu_seconds']:.0f} s of CPU); their {law['samples']} completions against the "
            f"enumerated law: χ² = {law['chi2']:.1f} on {law['dof']} degrees of freedom, p = {law['p_value']:.3g}.",
            "",
        ]
    return lines


MERGE_KEYS = ("repetitions", "groups", "num_generations", "max_completion_length", "vocab_size",
              "temperature", "reward_value", "noise", "random_directions", "seed", "threads")
"""The run settings two results must share to be merged (``meta["config"]``)."""


def merge_results(results: dict, part: dict) -> dict:
    """Merge the rows of a partial run (``--only``) into full results.

    Rows of ``results`` whose configuration (``label``) the partial run has are
    replaced by its rows, the others kept, in order, followed by the new ones. The
    meta data stays that of ``results``, plus the partial run's ``vbon`` summaries and
    an entry in ``merged_runs`` (its selection, labels, wall and CPU time, and the
    sampling-law test of its completions), replacing an earlier one of the same selection.

    Raises
    ------
    ValueError
        If the two runs differ in a setting of :data:`~bonmath.trl_audit.MERGE_KEYS`, or in the TRL,
        transformers or torch version.

    Examples
    --------
    >>> meta = {"config": {"seed": 0}, "trl_version": "1.16", "transformers_version": "5", "torch_version": "2"}
    >>> results = {"meta": meta, "rows": [{"label": "A", "bias_z": 9.0}, {"label": "B", "bias_z": 1.0}]}
    >>> part = {"meta": {**meta, "config": {"seed": 0, "only": "A"}, "wall_seconds": 1.0, "cpu_seconds": 2.0,
    ...                  "pooled_sampling_law": {}}, "rows": [{"label": "A", "bias_z": 0.5}]}
    >>> [(row["label"], row["bias_z"]) for row in merge_results(results, part)["rows"]]
    [('B', 1.0), ('A', 0.5)]
    >>> merge_results(results, {**part, "meta": {**part["meta"], "config": {"seed": 1}}})
    Traceback (most recent call last):
    ...
    ValueError: cannot merge runs with different seed: 0 and 1
    """
    meta, new = results["meta"], part["meta"]
    for key in MERGE_KEYS:
        if meta["config"].get(key) != new["config"].get(key):
            raise ValueError(f"cannot merge runs with different {key}: {meta['config'].get(key)!r} "
                             f"and {new['config'].get(key)!r}")
    for key in ("trl_version", "transformers_version", "torch_version"):
        if meta[key] != new[key]:
            raise ValueError(f"cannot merge runs with different {key}: {meta[key]!r} and {new[key]!r}")
    labels = {row["label"] for row in part["rows"]}
    selection = new["config"].get("only", "all")
    merged = copy.deepcopy(meta)
    merged["vbon"] = {**meta.get("vbon", {}), **new.get("vbon", {})}
    merged["merged_runs"] = [r for r in meta.get("merged_runs", []) if r["selection"] != selection] + [{
        "selection": selection,
        "labels": sorted(labels),
        "wall_seconds": new["wall_seconds"],
        "cpu_seconds": new["cpu_seconds"],
        "pooled_sampling_law": new["pooled_sampling_law"],
    }]
    rows = [row for row in results["rows"] if row["label"] not in labels] + list(part["rows"])
    return {"meta": merged, "rows": copy.deepcopy(rows)}
