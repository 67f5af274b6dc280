"""RPG divergences as named KL penalties inside verl: ``kl_loss_type=rpg_urkl``, ``algorithm.kl_penalty=rpg_urkl``.

verl 0.9.1 has no KL registry: both of its KL call sites (the actor's KL loss in ``verl.workers.utils.losses.ppo_loss``
and the KL-in-reward penalty ``verl.trainer.ppo.ray_trainer.apply_kl_penalty``) call
``verl.trainer.ppo.core_algos.kl_penalty``, which looks ``kl_penalty_forward`` up in its module at call time. Replacing
that one function therefore reaches every call site, including modules that imported ``kl_penalty`` by name. Names we
do not own fall through to verl's original function (its results bit for bit, its error for unknown names).

What this path can and cannot do: verl passes only two log-probs (``log_prob`` and ``ref_log_prob``), no
``old_log_prob``. Our estimators therefore take the samples as on-policy (pi_old = pi_theta, w = 1 with its
gradient; ``rpg_ext.divergences.rpg_kl_term``). That is exact for the actor KL loss on on-policy data (the first update
on a fresh batch); later mini-batches or epochs of an off-policy update miss the importance weight. In the reward
(``algorithm.kl_penalty``) the value is an unbiased estimate, but the policy gradient a reward penalty induces is
beta * grad D only for ``rpg_rkl`` (:func:`kl_in_reward_note`). verl's ``+`` suffix is refused on these names
(:func:`check_kl_penalty_name`). The exact off-policy regularizer is ``algorithm.rpg.kl`` (three log-probs).

Upstream change that would remove this patch: a KL-estimator registry in ``core_algos`` (like the policy-loss
registry) that ``kl_penalty_forward`` consults.
"""

from __future__ import annotations

import verl
import verl.trainer.ppo.core_algos as core_algos

from rpg_ext import RPG_KL_PENALTIES, VERL_VERSION
from rpg_ext.divergences import rpg_kl_term

#: verl's original ``kl_penalty_forward`` (saved once, before any patch).
verl_kl_penalty_forward = getattr(core_algos.kl_penalty_forward, "verl_original", core_algos.kl_penalty_forward)

#: The rpg_* penalty whose reward-penalty gradient is beta * grad D: the reverse KL (RPG's reward form).
KL_IN_REWARD_EXACT = ("rpg_rkl",)


def check_kl_penalty_name(name, key: str) -> None:
    """Refuse ``rpg_<div>+``: verl's ``+`` suffix keeps a penalty's value but takes k2's gradient, which is the
    reverse KL's; on ``rpg_fkl`` / ``rpg_ufkl`` that optimizes another divergence than the name says, and every
    rpg_* estimator already has its divergence's gradient. Called wherever a config names a KL penalty."""
    if isinstance(name, str) and name.endswith("+") and name[:-1] in RPG_KL_PENALTIES:
        raise ValueError(
            f"{key}={name!r} is refused: verl's '+' suffix replaces the estimator's gradient by k2's (the reverse "
            f"KL's gradient), so {name} would no longer follow its own divergence ({name[:-1]}'s gradient is "
            f"already that divergence's). Use {key}={name[:-1]}"
        )


def kl_in_reward_note(name: str) -> str | None:
    """A note for the dry run when ``use_kl_in_reward`` uses an rpg_* penalty whose induced gradient is not beta*grad D."""
    if name in RPG_KL_PENALTIES and name not in KL_IN_REWARD_EXACT:
        return (f"algorithm.kl_penalty={name} in the reward: its value estimates the divergence without bias, but the "
                "policy gradient of a reward penalty is beta * grad D only for rpg_rkl (reverse KL); for "
                f"{name} it is not. For {name[4:]}'s exact gradient use the RPG loss {name} or "
                f"algorithm.rpg.kl.divergence={name[4:]}")
    return None


def kl_penalty_forward(logprob, ref_logprob, kl_penalty):
    """verl's ``kl_penalty_forward`` plus the RPG names (``rpg_fkl``, ``rpg_rkl``, ``rpg_ufkl``, ``rpg_urkl``)."""
    if kl_penalty in RPG_KL_PENALTIES:
        return rpg_kl_term(kl_penalty[len("rpg_"):], logprob, ref_logprob)
    return verl_kl_penalty_forward(logprob, ref_logprob, kl_penalty)


kl_penalty_forward.verl_original = verl_kl_penalty_forward


def install() -> bool:
    """Install the dispatch into verl (idempotent). Only on the verl version it was written for."""
    if verl.__version__ != VERL_VERSION:
        return False
    core_algos.kl_penalty_forward = kl_penalty_forward
    return True


def installed() -> bool:
    return core_algos.kl_penalty_forward is kl_penalty_forward
