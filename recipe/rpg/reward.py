"""The paper's outcome reward for math answers, as a verl custom reward function.

The paper trains and evaluates with the DAPO prompt template ("... The last line of your response should be
of the form Answer: $Answer ..."), so every data source of the recipe is scored by verl's own
``verl.utils.reward_score.math_dapo`` scorer:

* the prediction is the text after the last ``Answer:`` (case-insensitive) in the final 300 characters of
  the response; when there is no ``Answer:`` there, the last ``\\boxed{...}`` in the final 100 characters,
  compared verbatim;
* prediction and ground truth are normalized the same way (text after the last ``=``, spaces, ``$...$``,
  ``\\text{}``, ``\\boxed{}``, units like ``degrees``/``cm``, ``^\\circ``, ``\\fracab``/``\\sqrta`` shorthands,
  thousands separators) and then compared as strings: there is no symbolic equivalence (``3/4`` is not
  ``\\frac{3}{4}``) and a trailing period outside ``$...$`` is not removed;
* ``score`` is +1.0 for a correct answer and -1.0 otherwise, ``acc`` is 1.0 or 0.0, ``pred`` is the
  normalized prediction.

What verl's default router does not do, this module does: it routes the recipe's data sources (and the
released ``amc-23.parquet``'s ``amc_23``) to that scorer, and it raises for an unknown data source or a
ground truth that is not a non-empty string instead of guessing.

Time per response is bounded: verl's scorer reads only the final 300 characters of the response, but it
normalizes the whole ground truth, in time quadratic in its length (10k characters take about a second, 100k
do not finish in minutes). So a ground truth longer than ``MAX_GROUND_TRUTH_CHARS`` (1,000 characters, about
10 ms; ``recipe/rpg/data.py`` rejects such rows when it prepares the files) raises ValueError before scoring.

verl loads this function through ``reward.custom_reward_function.path`` / ``.name``; its reward manager
(``dapo`` in the recipe, which adds the overlong penalty) copies every key of the returned dict into the
reward extra info, where validation turns ``acc`` into ``val-core/<data_source>/acc/mean@<n>``.
"""

from verl.utils.reward_score import math_dapo

from recipe.rpg.data import DATA_SOURCE_ALIASES, DATA_SOURCES, MAX_GROUND_TRUTH_CHARS


def canonical_data_source(data_source: str) -> str:
    """The recipe's name of a data source; raises ValueError for a source this reward does not score."""
    name = DATA_SOURCE_ALIASES.get(data_source, data_source)
    if name not in DATA_SOURCES:
        known = ", ".join(DATA_SOURCES + tuple(DATA_SOURCE_ALIASES))
        raise ValueError(
            f"recipe.rpg.reward.compute_score: unknown data_source {data_source!r}; this reward scores {known}. "
            "Fix the data_source column of the data file (scripts/prepare_data.py writes the recipe's names)."
        )
    return name


def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    """Score one response (verl's custom reward function signature).

    Args:
        data_source: the row's ``data_source`` (one of ``DATA_SOURCES`` or an alias).
        solution_str: the decoded response (special tokens removed).
        ground_truth: the row's ``reward_model.ground_truth`` (a non-empty string of at most
            ``MAX_GROUND_TRUTH_CHARS`` characters).
        extra_info: the row's ``extra_info`` (unused; part of verl's signature).

    Returns:
        ``{"score": +1.0 | -1.0, "acc": 1.0 | 0.0, "pred": str}``, the same keys for every data source
        (verl's reward managers require the same extra-info keys for every sample of a batch).
    """
    canonical_data_source(data_source)
    if not isinstance(ground_truth, str) or not ground_truth.strip():
        raise ValueError(
            f"recipe.rpg.reward.compute_score: ground_truth must be a non-empty string, got {ground_truth!r} "
            f"(data_source {data_source!r}, extra_info {extra_info!r})"
        )
    if len(ground_truth) > MAX_GROUND_TRUTH_CHARS:
        raise ValueError(
            f"recipe.rpg.reward.compute_score: ground_truth has {len(ground_truth)} characters "
            f"({ground_truth[:40]!r}...), over the limit of {MAX_GROUND_TRUTH_CHARS} (data_source {data_source!r}, "
            f"extra_info {extra_info!r}): verl's math_dapo scorer takes time quadratic in this length. Fix the "
            "data file: rebuild it with scripts/prepare_data.py, which rejects such rows (--skip-bad-rows drops "
            "them, counted)."
        )
    if not isinstance(solution_str, str):
        raise TypeError(
            f"recipe.rpg.reward.compute_score: solution_str must be a string, got {type(solution_str).__name__}"
        )
    result = math_dapo.compute_score(solution_str, ground_truth)
    correct = bool(result["acc"])
    return {"score": 1.0 if correct else -1.0, "acc": 1.0 if correct else 0.0, "pred": str(result["pred"])}
