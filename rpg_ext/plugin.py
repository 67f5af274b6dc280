"""verl plugin entry point (group ``verl.plugins``, name ``rpg``).

``import verl`` loads this module in every process, Ray workers included, and it registers the RPG
losses. verl only logs a failing plugin at debug level: ``python -m rpg_ext check`` reports it loudly.
"""

from rpg_ext.losses import register

register()
