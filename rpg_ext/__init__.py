"""rpg_ext: the RPG (Regularized Policy Gradient) loss family for verl.

Installing this package registers, through verl's ``verl.plugins`` entry point, eight policy losses
in verl's policy-loss registry (see ``rpg_ext.losses``). This module stays import-light (no torch,
no verl) so that ``python -m rpg_ext check`` can diagnose a broken installation. Every list of names
of the package is derived from :data:`DIVERGENCES` here.
"""

__version__ = "0.1.0"

#: The four divergences of the paper (spec table): forward/reverse, normalized/unnormalized KL.
DIVERGENCES = ("fkl", "rkl", "ufkl", "urkl")

#: Fully differentiable RPG losses (spec section 1).
RPG_LOSSES = tuple(f"rpg_{d}" for d in DIVERGENCES)
#: REINFORCE-style RPG losses (spec section 2).
RPG_REINFORCE_LOSSES = tuple(f"rpg_reinforce_{d}" for d in DIVERGENCES)
#: Every policy-loss name this package registers in verl.
RPG_LOSS_NAMES = RPG_LOSSES + RPG_REINFORCE_LOSSES
#: The same ``rpg_<div>`` names as values of verl's ``kl_loss_type`` / ``algorithm.kl_penalty`` (``rpg_ext.kl_penalty``).
RPG_KL_PENALTIES = RPG_LOSSES

#: The verl release this package was written and tested against.
VERL_VERSION = "0.9.1"
