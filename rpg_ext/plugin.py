"""verl plugin entry point (group ``verl.plugins``, name ``rpg``).

``import verl`` loads this module in every process, Ray workers included. It registers the eight RPG losses in
verl's policy-loss registry, the RPG KL penalties (``kl_loss_type`` / ``algorithm.kl_penalty`` = ``rpg_*``, verl
0.9.1 only) and, on every platform, the rollout backend ``hf`` (``actor_rollout_ref.rollout.name=hf``; lazily,
when verl imports its rollout tables: ``rpg_ext.rollouts``); with ``VERL_PLATFORM=cpu`` it also activates
``rpg_ext.cpu`` (verl's real trainer on the CPU).
verl only logs a failing plugin at debug level: ``python -m rpg_ext check`` reports it loudly.
"""

from rpg_ext import cpu, kl_penalty, losses, rollouts

losses.register()
kl_penalty.install()
rollouts.register_hf_rollout()

if cpu.requested():
    cpu.activate()
