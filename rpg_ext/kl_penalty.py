"""RPG divergences as named KL penalties inside verl: ``kl_loss_type=rpg_urkl``, ``algorithm.kl_penalty=rpg_urkl``.

verl 0.9.1 has no KL registry: both of its KL call sites (the actor's KL loss in ``verl.workers.utils.losses.ppo_loss``
and the KL-in-reward penalty ``verl.trainer.ppo.ray_trainer.apply_kl_penalty``) call
``verl.trainer.ppo.core_algos.kl_penalty``, which looks ``kl_penalty_forward`` up in its module at call time. Replacing
that one function therefore reaches every call site, including modules that imported ``kl_penalty`` by name. Names we
do not own fall through to verl's original function (its results bit for bit, its error for unknown names); verl's
``+`` suffix (straight-through k2 gradient) keeps working on top of our names since ``kl_penalty`` handles it.

What this path can and cannot do: verl passes only two log-probs (``log_prob`` and ``ref_log_prob``), no
``old_log_prob``. Our estimators therefore take the samples as on-policy (pi_old = pi_theta, w = 1 with its
gradient; ``rpg_ext.kl.rpg_kl_term``). That is exact for the KL-in-reward penalty (verl evaluates it at the sampling
policy itself) and for the actor KL loss on on-policy data (the first update on a fresh batch); later mini-batches
or epochs of an off-policy update miss the importance weight. The exact off-policy regularizer is
``algorithm.rpg.kl`` (three log-probs) of the recipe.

Upstream change that would remove this patch: a KL-estimator registry in ``core_algos`` (like the policy-loss
registry) that ``kl_penalty_forward`` consults.
"""

from __future__ import annotations

import verl
import verl.trainer.ppo.core_algos as core_algos

from rpg_ext import VERL_VERSION
from rpg_ext.kl import RPG_KL_ESTIMATORS, get_kl_estimator

#: verl's original ``kl_penalty_forward`` (saved once, before any patch).
verl_kl_penalty_forward = getattr(core_algos.kl_penalty_forward, "verl_original", core_algos.kl_penalty_forward)

_NOT_INSTALLED_REASON: str | None = None


def kl_penalty_forward(logprob, ref_logprob, kl_penalty):
    """verl's ``kl_penalty_forward`` plus the RPG names (``rpg_fkl``, ``rpg_rkl``, ``rpg_ufkl``, ``rpg_urkl``)."""
    if kl_penalty in RPG_KL_ESTIMATORS:
        return get_kl_estimator(kl_penalty)(logprob, ref_logprob)
    return verl_kl_penalty_forward(logprob, ref_logprob, kl_penalty)


kl_penalty_forward.verl_original = verl_kl_penalty_forward


def install() -> bool:
    """Install the dispatch into verl (idempotent). Only on the verl version it was written for."""
    global _NOT_INSTALLED_REASON
    if verl.__version__ != VERL_VERSION:
        _NOT_INSTALLED_REASON = (
            f"the rpg_* KL penalties patch verl {VERL_VERSION}'s kl_penalty_forward; found verl {verl.__version__}, "
            "so kl_loss_type / algorithm.kl_penalty = rpg_* are unavailable"
        )
        return False
    core_algos.kl_penalty_forward = kl_penalty_forward
    return True


def installed() -> bool:
    return core_algos.kl_penalty_forward is kl_penalty_forward


def not_installed_reason() -> str | None:
    return _NOT_INSTALLED_REASON
