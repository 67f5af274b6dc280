"""verl plugin entry point (group ``verl.plugins``, name ``rpg``).

``import verl`` loads this module in every process, Ray workers included, and it registers the RPG
losses and the RPG KL penalties (``kl_loss_type`` / ``algorithm.kl_penalty`` = ``rpg_*``, verl 0.9.1 only); with ``VERL_PLATFORM=cpu`` it also activates ``rpg_ext.cpu`` (verl's real trainer on the CPU).
verl only logs a failing plugin at debug level: ``python -m rpg_ext check`` reports it loudly.
"""

from rpg_ext import cpu, kl_penalty
from rpg_ext.losses import register

register()
kl_penalty.install()

if cpu.requested():
    cpu.activate()
