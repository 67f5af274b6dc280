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


def check_kl_penalty_name(name, key: str) -> None:
    """Refuse ``rpg_<div>+``: verl's ``+`` suffix keeps a penalty's value but takes k2's gradient, which is the
    reverse KL's; on ``rpg_fkl`` / ``rpg_ufkl`` that optimizes another divergence than the name says, and every
    rpg_* estimator already has its divergence's gradient. Called wherever a config names a KL penalty."""
    if isinstance(name, str) and name.endswith("+") and name[:-1] in RPG_KL_ESTIMATORS:
        raise ValueError(
            f"{key}={name!r} is refused: verl's '+' suffix replaces the estimator's gradient by k2's (the reverse "
            f"KL's gradient), so {name} would no longer follow its own divergence ({name[:-1]}'s gradient is "
            f"already that divergence's). Use {key}={name[:-1]}"
        )


#: What the gradient of ``algorithm.kl_penalty=<name>`` (KL in the reward) is: the penalty's value is an unbiased
#: estimate of the divergence, but as a reward penalty the policy gradient it induces is beta * grad D only for
#: the reverse KL (the reward-penalty form of RPG is the reverse-KL objective).
KL_IN_REWARD_EXACT = ("rpg_rkl",)


def kl_in_reward_note(name: str) -> str | None:
    """A note for the dry run when ``use_kl_in_reward`` uses an rpg_* penalty whose induced gradient is not beta*grad D."""
    if name in RPG_KL_ESTIMATORS and name not in KL_IN_REWARD_EXACT:
        return (f"algorithm.kl_penalty={name} in the reward: its value estimates the divergence without bias, but the "
                "policy gradient of a reward penalty is beta * grad D only for rpg_rkl (reverse KL); for "
                f"{name} it is not. For {name[4:]}'s exact gradient use the RPG loss rpg_{name[4:]} or "
                f"algorithm.rpg.kl.divergence={name[4:]}")
    return None


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
