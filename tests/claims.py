"""The registry of claims checked by the tests: the tables of the "Theory claims" page.

Each row names a claim, its source, the tests that check it and the verdict. The
documentation renders these tables (``docs/_ext/claims_table.py``) and
``tests/test_docs.py`` checks that every test named here exists and that every test of
``tests/test_theory.py`` is named by some row, so the table cannot drift from the suite.
Cells are Markdown.
"""

from __future__ import annotations

from typing import NamedTuple


class Claim(NamedTuple):
    """One row: the claim, its source, the tests that check it (Markdown, test names in backticks), the verdict."""

    claim: str
    source: str
    tests: str
    verdict: str


class ClaimTable(NamedTuple):
    """A titled table of claims with the paragraph that explains how to read it."""

    title: str
    intro: str
    claims: tuple[Claim, ...]


THEORY = ClaimTable(
    title='The wider Best-of-N theory',
    intro=(
        '`bonmath.theory` computes the laws and bounds of the papers around vBoN exactly, ties\n'
        'included, each tested against brute force. `paper_figs/fig_related_laws.py` draws win\n'
        'rate against KL for BoN, soft BoN, Best-of-Poisson, the BoNBoN tilt and the KL-RL\n'
        'frontier on one enumerable task.\n'
        '\n'
        'Every claim below has one test in `tests/test_theory.py`, named after it; the code is in\n'
        '`bonmath.theory`. "Exact on tied supports" means checked against brute-force enumeration\n'
        '(exact rationals) or as an inequality on hypothesis-generated supports with ties and\n'
        'zero-mass strings. "Continuous limit" means it holds as the atoms shrink, and the test\n'
        "measures how fast the finite-support gap closes. Section and equation numbers: BOND's\n"
        "were checked against the text of arXiv 2407.14622v1; Beirami et al.'s follow the\n"
        'ICML 2025 version (arXiv 2401.01879v3) as read from its contents and a summary; the\n'
        "BoNBoN and vBoN numbers have not been checked against the papers' text.\n"
    ),
    claims=(
        Claim(
            claim='Two equally likely strings, distinct rewards, N = 2: π_N = (1/4, 3/4), KL = 0.1308 against the bound 0.1931',
            source='Beirami et al. 2024; {ref}`math-divergences`',
            tests='`test_two_equally_likely_strings_kl_is_0_1308_against_bound_0_1931`',
            verdict='holds exactly',
        ),
        Claim(
            claim='Same pair, N → ∞: KL → log 2 while log N - (N-1)/N grows without limit',
            source='Beirami et al. 2024',
            tests='`test_two_string_kl_tends_to_log_2_while_the_bound_grows_without_limit`',
            verdict='holds (the bound can be arbitrarily loose)',
        ),
        Claim(
            claim='KL(π_N‖π_ref) <= log N - (N-1)/N, tight as atoms shrink',
            source='Beirami et al. 2024',
            tests='`test_kl_bound_is_tight_as_atoms_shrink` (core: the bound itself)',
            verdict='tight only in the continuous limit; the gap is O(log k / k²) on a uniform support of size k',
        ),
        Claim(
            claim='KL̂_n(ε) = (1-ε)^n(log n + (n-1)log(1-ε) - (n-1)/n) + (1-(1-ε)^n) log((1-(1-ε)^n)/ε) is the KL when an atom of mass ε sits on top of an atomless rest',
            source='Beirami et al. 2024, Section 4 (derivation: bonmath)',
            tests='`test_beirami_estimate_is_the_exact_kl_of_an_atom_on_top_of_a_continuum`',
            verdict='exact in that limit (gap O(1/m²))',
        ),
        Claim(
            claim='KL̂_n decreases in ε, from log n - (n-1)/n (ε → 0) to 0 (ε = 1); stable evaluation',
            source='Beirami et al. 2024',
            tests='`test_beirami_estimate_matches_mpmath_and_decreases_from_the_bound_to_zero`',
            verdict='holds (matches mpmath to 1e-10 relative, ε from 1e-300 to 1)',
        ),
        Claim(
            claim='KL(π_N‖π_ref) <= KL̂_n(q_top) <= log N - (N-1)/N, with q_top the mass of the top reward level',
            source='bonmath (data processing), refining Beirami et al.',
            tests='`test_kl_le_beirami_estimate_at_top_level_mass_le_bound`',
            verdict='exact on tied supports (proved by coarse-graining)',
        ),
        Claim(
            claim='E_{π_N}[KL̂_n(π_ref(y))] >= KL(π_N‖π_ref)',
            source='Beirami et al., Conjecture 4.4 (ICML 2025 version; distinct rewards); bonmath adds ties',
            tests='`test_expected_beirami_estimate_upper_bounds_the_kl_on_tied_supports`',
            verdict='held on every support tried (hypothesis plus 20,000 random and adversarially optimised supports); not proved',
        ),
        Claim(
            claim='W(π_N, π_ref) <= N/(N+1), = 1/2 at N = 1',
            source='Beirami et al. 2024',
            tests='`test_bon_win_rate_le_n_over_n_plus_1`',
            verdict='exact on tied supports (ties count 1/2)',
        ),
        Claim(
            claim='W(π_N, π_ref) → N/(N+1) as atoms shrink',
            source='Beirami et al. 2024',
            tests='`test_bon_win_rate_reaches_n_over_n_plus_1_in_the_continuous_limit`',
            verdict='continuous limit (gap O(1/k²))',
        ),
        Claim(
            claim='π_N = π_ref F_le^(N-1) Σ_i (F_lt/F_le)^(i-1) (correction-factor form), with ties',
            source='BOND (Sessa et al. 2024), eq. 4',
            tests='`test_bond_correction_factor_form_equals_brute_force_bon`, `test_bond_correction_factor_form_equals_the_core_bon_law`',
            verdict='exact on tied supports',
        ),
        Claim(
            claim='Forward, backward and Jeffreys divergences between π_θ and π_N',
            source='BOND, Section 4.2 (eq. 11)',
            tests='`test_bond_divergences_equal_exact_kls`',
            verdict='exact',
        ),
        Claim(
            claim='Their gradients (in the policy and the reference) are exact',
            source='bonmath',
            tests='`test_bond_divergence_gradients_match_central_finite_differences`',
            verdict='autograd matches central differences (relative error < 1e-6)',
        ),
        Claim(
            claim="Iterated BoN: BoN_a(BoN_b) = BoN_{ab} (BOND's iterated distillation), for real a, b too",
            source='BOND, iterated BOND (the core tests integers)',
            tests='`test_iterated_bon_composes_for_real_n`',
            verdict='exact for real a, b > 0',
        ),
        Claim(
            claim='Among policies π_ref f(r), the win-rate-optimal one at fixed KL is π_ref e^(cF)/Z',
            source='BoNBoN (Gui et al. 2024), Theorem 1',
            tests='`test_mid_cdf_tilt_wins_at_least_as_often_as_bon_at_matched_kl`, `test_mid_cdf_tilt_is_the_exact_win_rate_frontier`',
            verdict='exact on tied supports **with F = F_mid = (F_lt + F_le)/2**, and optimal over *all* policies',
        ),
        Claim(
            claim='...with F = F_lt (the formula read literally) it is not optimal when rewards tie',
            source='bonmath',
            tests='`test_lt_cdf_tilt_is_not_win_rate_optimal_with_ties`',
            verdict='shown false on a tied support',
        ),
        Claim(
            claim='W(c) = 1/(1-e^(-c)) - 1/c, KL(c) = c W(c) - log((e^c - 1)/c)',
            source='BoNBoN, Section 3',
            tests='`test_bonbon_continuous_curves_match_mpmath`, `test_bonbon_curves_are_the_limit_of_the_tilt_on_uniform_supports`, `test_bonbon_c_for_kl_inverts_the_kl_curve`',
            verdict='continuous limit (gap O(1/k²)); evaluation matches mpmath to 1e-10 for c from 1e-8 to 1e6',
        ),
        Claim(
            claim='BoN is within 0.01 of the optimal win rate at matched KL',
            source='BoNBoN, Section 3',
            tests='`test_bon_is_within_0_01_of_the_optimal_win_rate_in_the_continuous_limit`, `test_bon_is_within_0_01_of_optimal_on_a_large_uniform_support`',
            verdict='holds in the continuous limit (largest gap 0.0095, near n = 1.78)',
        ),
        Claim(
            claim='...on every finite support',
            source='(implied reading)',
            tests='`test_bon_can_be_more_than_0_01_from_optimal_on_a_tied_finite_support`',
            verdict='**false**: masses (1,1,1,14,3)/20 on five levels, n = 2, give a gap of 0.0110',
        ),
        Claim(
            claim='Expected best-vs-worst BoN log-ratio margin is (n-1) H_{n-1}; β* = 1/(2(n-1)H_{n-1})',
            source='BoNBoN, Section 4',
            tests='`test_bon_expected_margin_equals_brute_force`, `test_bon_margin_tends_to_n_minus_1_times_harmonic_and_sets_beta_star`',
            verdict='the exact discrete margin (checked by brute force) tends to (n-1)H_{n-1} at O(1/k); it can be larger or smaller on finite supports',
        ),
        Claim(
            claim='Soft BoN law: n π_ref(y) E[w(y)/(w(y) + S_{n-1})], evaluated exactly by a sum over multinomial level counts',
            source='Verdun et al. 2025 (sampler); exact sum: bonmath',
            tests='`test_soft_bon_equals_brute_force_with_exact_rationals`, `test_soft_bon_normalises_and_is_proportional_to_the_reference_within_a_level`',
            verdict='exact on tied supports',
        ),
        Claim(
            claim='Soft BoN, n = 1 gives π_ref',
            source='Verdun et al. 2025',
            tests='`test_soft_bon_with_one_draw_is_the_reference`',
            verdict='exact',
        ),
        Claim(
            claim='Soft BoN, λ → 0 gives BoN, ties broken uniformly among tied maxima',
            source='Verdun et al. 2025',
            tests='`test_soft_bon_cold_limit_is_bon_with_uniform_ties`',
            verdict='holds (uniform tie-breaking confirmed)',
        ),
        Claim(
            claim='Soft BoN, n → ∞ gives π_ref e^(r/λ)/Z, O(1/n) in KL',
            source='Verdun et al. 2025',
            tests='`test_soft_bon_tends_to_the_tilt_at_rate_one_over_n_squared`',
            verdict='holds, and faster: KL = Var_{π_λ}(w)/(2 E_ref[w]²)/n² + O(1/n³)',
        ),
        Claim(
            claim='Best-of-Poisson (n-1 ~ Poisson(μ)): the level CDF maps to F e^(μ(F-1)), ∝ π_ref within a level',
            source='Khalaf et al. 2025, arXiv 2506.19248 (the sampler; n = 1 + Poisson(μ) as in the authors\' released code); the tie-aware law: bonmath derivation',
            tests='`test_best_of_poisson_equals_the_poisson_mixture_of_bon_laws`, `test_best_of_poisson_is_accurate_for_tiny_atoms_and_large_mu`',
            verdict='exact on tied supports (against the Poisson mixture of BoN laws and mpmath)',
        ),
        Claim(
            claim='Best-of-Poisson quantile density (1 + μu) e^(μ(u-1))',
            source='{ref}`math-related`; the same density as in the authors\' released code (`hskhalaf/hedging`, `src/toy.py`)',
            tests='`test_best_of_poisson_has_quantile_density_one_plus_mu_u_times_exp`',
            verdict='continuous limit (within the midpoint-rule error bound (3μ²+μ³)/(24k²))',
        ),
        Claim(
            claim='Regularised BoN with score r + β log π_ref is BoN of that score, exact with ties',
            source='bonmath',
            tests='`test_regularized_bon_is_bon_of_the_score_by_brute_force`, `test_regularized_bon_ties_strings_with_different_rewards`, `test_regularized_bon_of_float32_tensors_ranks_by_the_float64_score`',
            verdict='exact (ties are decided on the floating-point score)',
        ),
        Claim(
            claim='χ² and Rényi divergences',
            source='definitions',
            tests='`test_chi2_and_renyi_divergences_equal_exact_sums`',
            verdict='exact',
        ),
        Claim(
            claim='χ²(π_N‖π_ref) <= (N-1)²/(2N-1)',
            source='{ref}`math-related`',
            tests='`test_bon_chi2_le_n_minus_1_squared_over_2n_minus_1`',
            verdict='exact on tied supports (data processing)',
        ),
        Claim(
            claim='D_α(π_N‖π_ref) <= (1/(α-1)) log(n^α/(α(n-1)+1)); D_∞ <= log n',
            source='bonmath derivation from the continuous case',
            tests='`test_bon_renyi_le_continuous_value`',
            verdict='exact on tied supports for α in {0.3, 0.5, 1, 2, 3, ∞}',
        ),
        Claim(
            claim='The χ² and Rényi bounds are attained in the continuous limit; E_ref[(n u^(n-1))^α] = n^α/(α(n-1)+1)',
            source='bonmath derivation',
            tests='`test_bon_divergence_bounds_are_attained_in_the_continuous_limit`',
            verdict='continuous limit',
        ),
        Claim(
            claim='The released code\'s "exact" mode (reward R_n/n, β = 1/(n-1)) converges to π_ref^(1/n) π_n^((n-1)/n)/Z',
            source='{ref}`math-vbon`',
            tests='`test_released_exact_mode_optimum_maximises_its_objective`, `test_released_exact_mode_two_string_example`',
            verdict='exact',
        ),
        Claim(
            claim='...which is π_n only with β = 1/n',
            source='{ref}`math-vbon`',
            tests='`test_released_exact_mode_reaches_bon_only_with_beta_one_over_n`',
            verdict='exact (KL > 0 whenever π_n ≠ π_ref; two-string example: 0.0330 nats)',
        ),
    ),
)


INFERENCE_AWARE = ClaimTable(
    title='Inference-aware Best-of-N, J-BOND, InfAlign and InferenceTimePessimism',
    intro=(
        'Checked in `tests/test_inference_aware.py` and\n'
        '`tests/test_theory_inference_aware.py`. PKPO\'s equation numbers and definitions were\n'
        'checked against its text (arXiv 2505.15201, the v3/v4 revision). The stored copies of\n'
        'the InfAlign and pessimism papers hold only their first page (InfAlign: also the\n'
        'section titles of v5), so their formulas were checked against the abstracts, public\n'
        "reimplementations and released code where it exists (RUCAIBox's Pass@k Training,\n"
        "verl's `grpo_passk`); each row says which; details on the page\n"
        '{doc}`/results/inference_aware`.\n'
    ),
    claims=(
        Claim(
            claim='max@k = E[max of k draws] = Σ_v v (F_le^k − F_lt^k) = E_{BoN_k}[r], ties and zero mass',
            source='PKPO (maxg@k); {ref}`math-inference-aware`',
            tests='`test_max_at_k_is_the_expected_maximum_of_k_draws`, `test_max_at_k_for_real_k_is_the_closed_form`',
            verdict='holds exactly',
        ),
        Claim(
            claim='pass@k = 1 − (1 − p)^k, stable for p or 1 − p = 1e-300 and k = 1e15',
            source='PKPO; Chen et al. 2021',
            tests='`test_pass_at_k_is_one_minus_the_chance_that_k_draws_all_fail`, `test_pass_at_k_is_accurate_for_extreme_p_and_k`',
            verdict='holds (1e-10 vs mpmath)',
        ),
        Claim(
            claim='∇pass@k = k (1 − p)^{k−1} ∇p',
            source='{ref}`math-inference-aware`',
            tests='`test_pass_at_k_gradient_is_k_one_minus_p_to_the_k_minus_one_times_grad_p`',
            verdict='holds',
        ),
        Claim(
            claim='d/dn E_{BoN_n(proxy)}[r_true] = Σ_v m_v (F_le^n log F_le − F_lt^n log F_lt)',
            source='Khalaf et al. 2025 (HedgeTune)',
            tests='`test_bon_true_reward_dn_is_the_n_derivative_of_the_true_reward`',
            verdict='holds (mpmath)',
        ),
        Claim(
            claim="HedgeTune's N* is the integer argmax of the true reward; the curve can be two-peaked",
            source='Khalaf et al. 2025',
            tests='`test_hedgetune_n_is_the_integer_argmax_of_the_true_reward`, `test_hedgetune_n_finds_the_global_optimum_of_a_two_peaked_curve`',
            verdict='holds; single peak not guaranteed on finite supports',
        ),
        Claim(
            claim='(1/C(n,k)) Σ_{i≥k} C(i−1,k−1) g_(i) is unbiased for max@k',
            source='PKPO eq. 12',
            tests='`test_max_at_k_estimate_is_unbiased`',
            verdict='holds exactly (rationals)',
        ),
        Claim(
            claim='E[Σ s_i ∇log π(y_i)] = ∇max@k for s, s^(loo), s^(loo−1)',
            source='PKPO eqs. 19, 29, 33',
            tests='`test_pkpo_weights_are_unbiased_for_the_max_at_k_gradient`',
            verdict='holds exactly (rationals)',
        ),
        Claim(
            claim='the order among tied rewards does not change the weights',
            source='PKPO',
            tests='`test_the_order_among_tied_rewards_does_not_change_the_weights`',
            verdict='holds exactly',
        ),
        Claim(
            claim='mean-centring with the own sample: E ĝ = (1 − k/n) ∇max@k',
            source='{ref}`math-gradients`, derived',
            tests='`test_mean_centred_pkpo_weights_are_biased_by_the_factor_one_minus_k_over_n`',
            verdict='holds exactly: biased',
        ),
        Claim(
            claim="σ A_i = (n/k)(s_i − s̄): Chen et al.'s advantage is the mean-centred PKPO weight over σ",
            source='Chen et al. 2025 (README formula)',
            tests='`test_passk_training_advantage_times_sigma_is_the_mean_centred_pkpo_weight_times_n_over_k`',
            verdict='holds exactly',
        ),
        Claim(
            claim="Chen et al.'s σ-normalised advantage is unbiased for ∇pass@k (up to scale)",
            source='Chen et al. 2025',
            tests='`test_passk_training_advantages_are_biased_for_the_pass_at_k_gradient`',
            verdict='fails: mean c ∇pass@k with c ≠ 1, 1 − k/n',
        ),
        Claim(
            claim="grpo_passk (no std) is unbiased for ∇max@n; = PKPO's k − 1 weight at k = n",
            source='Tang et al. 2025; verl',
            tests='`test_grpo_passk_without_std_is_unbiased_for_the_max_at_n_gradient`',
            verdict='holds exactly; biased for k < n',
        ),
        Claim(
            claim='grpo_passk / (std + 1e-6) (verl default) is unbiased',
            source='verl',
            tests='`test_grpo_passk_std_normalisation_is_biased`',
            verdict='fails: biased',
        ),
        Claim(
            claim="on binary rewards every reward-only estimator's mean is parallel to ∇pass@k",
            source='derived',
            tests='`test_on_binary_rewards_every_reward_only_estimator_is_parallel_to_grad_p`',
            verdict='holds exactly',
        ),
        Claim(
            claim='exact moments of any weight function = n-tuple enumeration',
            source='bonmath',
            tests='`test_exact_weight_moments_match_every_n_tuple`',
            verdict='holds',
        ),
        Claim(
            claim='J-BOND\'s reward is -log 16 for a sample worse than both of two anchor samples, else 0; "worse" is r(y) < r(y\') (main text) or r(y) <= r(y\') (appendix)',
            source='BOND (Sessa et al. 2024), the J-BOND section and Algorithm 2 (eq. 17 as numbered in the reimplementation `gurusha01/passk-frontier`, strict form); the ≤ form from the task brief; paper body not read',
            tests='`test_jbond_anchor_reward_is_minus_log_16_below_both_anchor_samples`',
            verdict='definition implemented with both comparisons (`worse="lt"` / `"le"`)',
        ),
        Claim(
            claim='E[r_J(y)] = -log 16 · (1 - F_le(y))² with "<", -log 16 · (1 - F_lt(y))² with "<="',
            source='bonmath derivation from the definition above',
            tests='`test_jbond_expected_reward_equals_brute_force_over_anchor_pairs`',
            verdict='exact on tied supports, both conventions',
        ),
        Claim(
            claim="E[r_J] approximates BOND's reward log F_le (log p_≤): the gap is f(u) = -log 16 (1-u)² - log u at u = F_le",
            source="BOND, the J-BOND section (the approximation; the paper's stated rationale for 16 not read); analysis: bonmath",
            tests='`test_jbond_expected_reward_meets_log_cdf_only_at_the_median_and_near_0_113`',
            verdict='crude: equal only at u = 1/2 and u ≈ 0.1127; below log u by up to 0.1744 nats (u ≈ 0.2361), above by up to 0.1148 (u ≈ 0.7639); bounded by -log 16 = -2.77 while log u → -∞',
        ),
        Claim(
            claim='Calibrated reward C = reference CDF of the reward; with ties bonmath offers mid / lt / le',
            source='InfAlign (Balashankar et al. 2024), Section 4 of v5 (calibrate step); abstract and section titles read, the tie convention of the definition **not** verified (the analysis assumes no ties)',
            tests='`test_mid_calibrated_reward_averages_to_the_win_rate_against_the_reference`',
            verdict='exact; only "mid" ((F_lt + F_le)/2) makes E_π[C] the win rate W(π, π_ref) with ties counting ½, for every π',
        ),
        Claim(
            claim='The CTRL optimum is π_ref exp(Φ(C)/β)/Z for Φ = log, identity, and the exponential family (e^(tC) - 1)/t',
            source='InfAlign, Sections 3-4 (abstract: "KL-regularized reward maximization step with a transformation of the calibrated reward")',
            tests='`test_ctrl_optimum_is_the_reference_tilted_by_the_transformed_calibrated_reward`',
            verdict='exact (against mpmath at 50 digits from exact C), t from -2.5 to 40, β down to 0.05',
        ),
        Claim(
            claim="Φ = log with β = 1/(N-1) is vBoN's bound optimum π_ref F_lt^(N-1)/Z",
            source='task brief; InfAlign relates the log transform to BoN distillation (body not read)',
            tests='`test_log_transform_with_beta_one_over_n_minus_1_is_the_vbon_bound_optimum_with_lt_cdf`',
            verdict='exact **with C = F_lt** on tied supports, real N up to 1000',
        ),
        Claim(
            claim='...with C = F_mid or F_le it is not',
            source='bonmath',
            tests='`test_log_transform_with_mid_or_le_cdf_is_not_the_vbon_bound_optimum`',
            verdict='shown false: two equal strings, N = 2: vBoN (0, 1); mid (1/4, 3/4); le (1/3, 2/3)',
        ),
        Claim(
            claim='Inference-time win rate W(T_N(π), T_N(π_ref)), T_N = best-of-N or worst-of-N, ties ½',
            source='InfAlign, Section 2 (abstract: "inference-time win rate of the aligned policy against the base model")',
            tests='`test_inference_time_win_rate_equals_brute_force_over_n_tuples`',
            verdict='exact on tied supports for any π, both procedures',
        ),
        Claim(
            claim='The exponential transform with t > 0 is best for best-of-N, t < 0 for worst-of-N',
            source='InfAlign, Section 5, checked against the abstract and an author\'s (Ziteng Sun\'s) public summary thread ("positive exponent" for BoN, "negative exponent" for worst-of-N)',
            tests='`test_infalign_best_t_is_positive_for_bon_and_negative_for_worst_of_n_near_the_continuous_limit`, `test_infalign_t_of_the_claimed_sign_is_best_on_tied_supports`',
            verdict='holds near the continuous limit (200 strings; N in {2, 4, 8}; KL 0.25 and 1 nat: the wrong sign wins strictly less often) and on every tied support tried (KL budgets 5%-90% of the largest) — see verdict 9 for the count',
        ),
        Claim(
            claim='`infalign_best_t` finds the best t at fixed N and KL',
            source='bonmath (β solved exactly for the KL budget per t, then W maximised over t)',
            tests='`test_infalign_best_t_beats_a_dense_grid_and_meets_the_kl_budget`',
            verdict='at least as good as every point of a 201-point grid of t in [-64, 64]; KL met to 1e-12',
        ),
        Claim(
            claim="InferenceTimePessimism's population limit: π_ref max(0, (r - λ)/β), λ normalising",
            source="Huang et al. 2025 (χ²-regularised alignment); abstract read; the relu form matches both reimplementations; the β scaling is bonmath's KKT derivation (objective E_π[r] - (β/2) χ²)",
            tests='`test_pessimism_limit_is_reference_times_relu_with_the_normalising_threshold`, `test_pessimism_limit_maximises_the_chi2_regularised_reward`, `test_pessimism_limit_is_exact_for_extreme_chi2_coefficients`',
            verdict='exact on tied supports; maximises E_π[r] - (β/2) χ²(π‖π_ref) (with the unhalved β χ², β ↦ 2β)',
        ),
        Claim(
            claim='The finite-n sampler: n draws, empirical λ̂, accept min(1, w/M), fallback; its exact law',
            source='Huang et al. 2025, the InferenceTimePessimism algorithm, as reimplemented in `ITP.py` (same draws, M = largest weight, uniform fallback) and the comparison script (π_ref fallback); paper body not read. Closed form over level counts: bonmath',
            tests='`test_pessimism_sampler_law_equals_the_brute_force_rejection_sampler`, `test_pessimism_sampler_with_one_draw_is_the_reference`, `test_pessimism_sampler_law_is_exact_for_extreme_chi2_coefficients`',
            verdict='exact on tied supports for M = largest weight and M = (R - λ̂)/β, both fallbacks; n = 1 gives π_ref',
        ),
        Claim(
            claim="The sampler's law tends to the population limit",
            source='Huang et al. 2025',
            tests='`test_pessimism_sampler_tends_to_its_population_limit`',
            verdict='holds, at rate O(1/n): total variation halves per doubling of n (9.4e-4 at n = 256)',
        ),
        Claim(
            claim='Best-of-N over-optimises a proxy: E_{BoN_N(proxy)}[r_true] can rise and then fall',
            source='Huang et al. 2025 (abstract: BoN "provably suffers from reward hacking when N is large")',
            tests='`test_bon_true_reward_rises_then_falls_on_the_hacked_proxy`',
            verdict='shown exactly on a 5-string pair: 1.05 (N = 1), peak 1.5319 (N = 3), below 1.05 from N = 9, → -2',
        ),
        Claim(
            claim='InferenceTimePessimism is "scaling-monotonic" (performance does not degrade with N)',
            source='Huang et al. 2025, abstract',
            tests='`test_pessimism_true_reward_is_not_monotone_in_n`, `test_pessimism_proxy_reward_is_not_monotone_in_n_either`',
            verdict='the *guarantee* is what the paper proves; the exact expected reward is **not** monotone: true reward 1.5139 (n = 4) > 1.4827 (n = 5) on the same pair (β = 1/2), proxy reward 3.32734 (n = 6) > 3.32690 (n = 7) on two strings (β = 4); no collapse: it stays above π_ref and above BoN from N = 12',
        ),
        Claim(
            claim='E[r_true] vs N for BoN, InferenceTimePessimism and Best-of-Poisson (mean N draws)',
            source='bonmath (`true_reward_curves`, for the figure)',
            tests='`test_true_reward_curves_are_the_three_exact_laws`',
            verdict='exact (BoN closed form, sampler brute force, Poisson mixture of BoN laws)',
        ),
        Claim(
            claim='Everything stays finite for atoms of 1e-300',
            source='bonmath',
            tests='`test_inference_aware_laws_are_finite_and_normalised_for_tiny_atoms`',
            verdict='holds: finite wherever the law has mass, -inf exactly where it has none, normalised',
        ),
        Claim(
            claim='torch inputs keep autograd with exact gradients',
            source='bonmath',
            tests='`test_inference_aware_functions_keep_autograd_with_exact_gradients`',
            verdict='autograd matches central differences (relative error < 1e-6)',
        ),
    ),
)


TABLES = (THEORY, INFERENCE_AWARE)
"""The tables in the order the page shows them."""
