"""Configuration of the RPG losses: typed dataclasses for verl's config system, and their validation.

verl hands every policy loss its actor config as ``config``. The RPG losses read

    config.policy_loss.rpg.beta          beta >= 0 (default 1e-4, the paper's value)
    config.policy_loss.rpg.clip          'dual' (default) | 'truncate' (REINFORCE family only) | 'none'
    config.clip_ratio_low / _high        eps_low / eps_high (each falls back to config.clip_ratio when null)
    config.clip_ratio_c                  c, the dual-clip bound (> 1)

``config`` may be verl's ``ActorConfig`` whose ``policy_loss`` is an :class:`RPGPolicyLossConfig`
(selected with ``actor_rollout_ref.actor.policy_loss._target_=rpg_ext.config.RPGPolicyLossConfig``), or a plain
OmegaConf ``DictConfig`` / dict carrying the same keys. A missing ``policy_loss.rpg`` block means the defaults.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from verl.base_config import BaseConfig
from verl.workers.config import PolicyLossConfig

CLIP_MODES = ("dual", "alg1", "truncate", "none")
DEFAULT_BETA = 1e-4
DEFAULT_CLIP = "dual"
#: verl's own default for ``clip_ratio_c`` (used by its ``vanilla`` loss when the key is absent).
VERL_DEFAULT_CLIP_RATIO_C = 3.0

_KEY = "actor_rollout_ref.actor"


def validate_beta(beta: Any, key: str = f"{_KEY}.policy_loss.rpg.beta") -> float:
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"{key} must be a finite float >= 0 (the KL strength beta), got {beta!r}")
    return float(beta)


#: Losses on which ``clip=alg1`` (the paper's Algorithm 1 as printed) keeps the objective's gradient: for the
#: forward divergences its gradient through A_hat = A + C/w cancels the KL term's (the loss -w * A_hat is
#: -w * A - beta * rho), so Algorithm 1 as printed would train them with no KL at all.
ALG1_LOSSES = ("rpg_rkl", "rpg_urkl")


def validate_clip(clip: Any, loss_name: str | None = None, key: str = f"{_KEY}.policy_loss.rpg.clip") -> str:
    if clip not in CLIP_MODES:
        raise ValueError(f"{key} must be one of {list(CLIP_MODES)}, got {clip!r}")
    if loss_name is None:
        return clip
    reinforce = loss_name.startswith("rpg_reinforce_")
    if clip == "truncate" and not reinforce:
        raise ValueError(
            f"{key}='truncate' (clipped REINFORCE weight) is only defined for the rpg_reinforce_* losses; "
            f"{loss_name} accepts 'dual', 'alg1' or 'none'"
        )
    if clip == "alg1" and loss_name not in ALG1_LOSSES:
        why = (
            "it is the dual clip of a fully differentiable loss; the rpg_reinforce_* losses have their own RPG-Style "
            "Clip (Algorithm 2), 'dual'" if reinforce else
            f"Algorithm 1 as printed differentiates through A_hat = A + C/w, and for {loss_name}'s forward "
            "divergence that cancels the KL term's gradient exactly (unclipped, -w * A_hat = -w * A - beta * rho: "
            "the run would have no KL at all); it is defined for rpg_rkl and rpg_urkl. Use 'dual'"
        )
        raise ValueError(f"{key}='alg1' (the paper's Algorithm 1 as printed) is refused for {loss_name}: {why}")
    return clip


@dataclass
class RPGConfig(BaseConfig):
    """The ``rpg`` block of the policy-loss config.

    Args:
        beta (float): KL strength beta >= 0 (paper: 1e-4).
        clip (str): 'dual' (rpg_*: verl's dual clip on A, KL term outside it, as the released code runs;
            rpg_reinforce_*: Algorithm 2's RPG-Style Clip), 'alg1' (rpg_rkl, rpg_urkl: Algorithm 1 as printed, the
            dual clip on A_hat = A + C/w with the KL inside), 'truncate' (rpg_reinforce_* only: w -> w_bar in SG,
            Remark F.2), or 'none'.
    """

    beta: float = DEFAULT_BETA
    clip: str = DEFAULT_CLIP

    def __post_init__(self):
        validate_beta(self.beta)
        validate_clip(self.clip)


@dataclass
class RPGPolicyLossConfig(PolicyLossConfig):
    """verl's ``PolicyLossConfig`` plus the ``rpg`` block; select with
    ``actor_rollout_ref.actor.policy_loss._target_=rpg_ext.config.RPGPolicyLossConfig``."""

    rpg: RPGConfig = field(default_factory=RPGConfig)

    def __post_init__(self):
        super_post_init = getattr(super(), "__post_init__", None)
        if super_post_init is not None:
            super_post_init()
        if not isinstance(self.rpg, RPGConfig):
            if not isinstance(self.rpg, Mapping):
                raise ValueError(f"{_KEY}.policy_loss.rpg must be a mapping, got {type(self.rpg).__name__}")
            unknown = sorted(set(self.rpg) - {"beta", "clip", "_target_"})
            if unknown:
                raise ValueError(f"{_KEY}.policy_loss.rpg has unknown keys {unknown}; known: beta, clip")
            rpg = RPGConfig(**{k: v for k, v in self.rpg.items() if k != "_target_"})
            object.__setattr__(self, "rpg", rpg)  # BaseConfig fields are frozen after __init__
        if self.loss_mode.startswith("rpg_"):
            validate_clip(self.rpg.clip, self.loss_mode)


@dataclass(frozen=True)
class RPGParams:
    """Validated hyperparameters of one RPG loss call."""

    beta: float
    clip: str
    eps_low: float
    eps_high: float
    clip_c: float


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):  # DictConfig, dict and verl's BaseConfig are all Mappings
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def resolve_params(config: Any, loss_name: str) -> RPGParams:
    """Read and validate the RPG hyperparameters of ``loss_name`` from verl's actor config."""
    if config is None:
        raise ValueError(f"{loss_name} needs verl's actor config (policy_loss.rpg, clip ratios); got config=None")
    if _get(config, "use_kl_loss", False):
        raise ValueError(
            f"{loss_name} already contains its KL term (beta * k); {_KEY}.use_kl_loss=True would count the KL "
            f"twice. Set {_KEY}.use_kl_loss=False and choose beta with {_KEY}.policy_loss.rpg.beta."
        )
    rpg = _get(_get(config, "policy_loss"), "rpg")
    beta = validate_beta(_get(rpg, "beta", DEFAULT_BETA))
    clip = validate_clip(_get(rpg, "clip", DEFAULT_CLIP), loss_name)

    clip_ratio = _get(config, "clip_ratio")
    eps_low = _get(config, "clip_ratio_low")
    eps_high = _get(config, "clip_ratio_high")
    eps_low = clip_ratio if eps_low is None else eps_low
    eps_high = clip_ratio if eps_high is None else eps_high
    clip_c = _get(config, "clip_ratio_c", VERL_DEFAULT_CLIP_RATIO_C)
    if clip_c is None:
        clip_c = VERL_DEFAULT_CLIP_RATIO_C
    for key, value in (("clip_ratio_low", eps_low), ("clip_ratio_high", eps_high), ("clip_ratio_c", clip_c)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(
                f"{_KEY}.{key} must be a finite number (falling back to {_KEY}.clip_ratio when null), got {value!r}"
            )
    if not 0 < eps_low < 1:
        raise ValueError(f"{_KEY}.clip_ratio_low (eps_low) must lie in (0, 1), got {eps_low!r}")
    if not eps_high > 0:
        raise ValueError(f"{_KEY}.clip_ratio_high (eps_high) must be > 0, got {eps_high!r}")
    if not clip_c > 1:
        raise ValueError(f"{_KEY}.clip_ratio_c (dual-clip bound c) must be > 1, got {clip_c!r}")
    return RPGParams(beta=beta, clip=clip, eps_low=float(eps_low), eps_high=float(eps_high), clip_c=float(clip_c))


# ---------------------------------------------------------------------------------------------------------------
# The recipe's ``algorithm`` block: ``algorithm.policy_loss`` and ``algorithm.rpg`` (recipe/rpg/config/*.yaml).
# The recipe's yaml wires them into the actor (``actor_rollout_ref.actor.policy_loss.loss_mode`` and ``.rpg``);
# these classes type and validate the user-facing side. New ``algorithm.rpg`` keys (reference management, a KL
# regularizer) are added as fields of :class:`RPGAlgorithmConfig`.
# ---------------------------------------------------------------------------------------------------------------

from verl.trainer.config import AlgoConfig  # noqa: E402  (appended section; verl.workers.config imports it too)

_ALGO_KEY = "algorithm"


REFERENCE_MODES = ("sampling", "fixed", "periodic")
KL_DIVERGENCES = ("fkl", "rkl", "ufkl", "urkl")


@dataclass
class RPGKLConfig(BaseConfig):
    """``algorithm.rpg.kl``: an RPG divergence added as ``beta * k`` on top of any policy loss (verl's ``vanilla``,
    ``gspo``, ``cispo``, ...), importance-weighted with three log-probs (theta, old, ref).

    Args:
        divergence (str | None): fkl | rkl | ufkl | urkl, or null (no regularizer).
        beta (float): its strength.
    """

    divergence: Optional[str] = None
    beta: float = DEFAULT_BETA

    def __post_init__(self):
        if self.divergence is not None and self.divergence not in KL_DIVERGENCES:
            raise ValueError(
                f"{_ALGO_KEY}.rpg.kl.divergence must be one of {list(KL_DIVERGENCES)} or null, got {self.divergence!r}"
            )
        validate_beta(self.beta, key=f"{_ALGO_KEY}.rpg.kl.beta")


@dataclass
class RPGAlgorithmConfig(BaseConfig):
    """``algorithm.rpg``: the RPG hyperparameters a user sets (beta and clip are fed to the actor's
    ``policy_loss.rpg``; the reference and the KL regularizer are run by the recipe's trainer).

    Args:
        beta (float): KL strength beta >= 0 (paper: 1e-4).
        clip (str): 'dual' | 'alg1' (rpg_rkl, rpg_urkl) | 'truncate' (rpg_reinforce_* only) | 'none'; see :class:`RPGConfig`.
        reference (str): 'sampling' (the paper's iterative reference: pi_ref = pi_old of the step, no reference
            model), 'fixed' (the initial model, frozen) or 'periodic' (a reference model refreshed from the current
            policy every ``reference_every`` steps and/or when the moving average of the KL estimate exceeds
            ``reference_kl_target``).
        reference_every (int | None): refresh period K in training steps ('periodic' only): verl's step (one
            batch, train_batch_size / ppo_mini_batch_size optimizer steps), not the paper's optimizer step.
        reference_kl_target (float | None): KL target kappa ('periodic' only).
        reference_kl_decay (float): moving-average decay of the KL estimate, avg <- d * avg + (1 - d) * kl.
        kl (RPGKLConfig): optional RPG KL regularizer on top of a non-RPG policy loss.
    """

    beta: float = DEFAULT_BETA
    clip: str = DEFAULT_CLIP
    reference: str = "sampling"
    reference_every: Optional[int] = None
    reference_kl_target: Optional[float] = None
    reference_kl_decay: float = 0.9
    kl: RPGKLConfig = field(default_factory=RPGKLConfig)

    def __post_init__(self):
        key = f"{_ALGO_KEY}.rpg"
        validate_beta(self.beta, key=f"{key}.beta")
        validate_clip(self.clip, key=f"{key}.clip")
        if not isinstance(self.kl, RPGKLConfig):
            object.__setattr__(self, "kl", _block(RPGKLConfig, self.kl, f"{key}.kl"))
        if self.reference not in REFERENCE_MODES:
            raise ValueError(f"{key}.reference must be one of {list(REFERENCE_MODES)}, got {self.reference!r}")
        every, target = self.reference_every, self.reference_kl_target
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"{key}.reference_every must be an integer >= 1 (training steps) or null, got {every!r}")
        if target is not None and (
            isinstance(target, bool) or not isinstance(target, int | float) or not math.isfinite(target) or target <= 0
        ):
            raise ValueError(f"{key}.reference_kl_target must be a float > 0 or null, got {target!r}")
        decay = self.reference_kl_decay
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 <= decay < 1:
            raise ValueError(f"{key}.reference_kl_decay must lie in [0, 1), got {decay!r}")
        if self.reference == "periodic" and every is None and target is None:
            raise ValueError(
                f"{key}.reference=periodic needs {key}.reference_every (K steps) and/or {key}.reference_kl_target "
                "(kappa): neither is set, so the reference would never be refreshed (that is reference=fixed)"
            )
        if self.reference != "periodic" and (every is not None or target is not None):
            raise ValueError(
                f"{key}.reference_every / reference_kl_target only apply to {key}.reference=periodic "
                f"(got reference={self.reference}, reference_every={every}, reference_kl_target={target})"
            )

    @property
    def uses_reference_model(self) -> bool:
        """Whether a reference model is loaded (reference fixed or periodic)."""
        return self.reference != "sampling"


def _block(cls, value, key: str):
    """A dict-like config block -> its dataclass, naming unknown keys."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be a mapping, got {type(value).__name__}")
    known = {f for f in cls.__dataclass_fields__ if f != "_target_"}
    unknown = sorted(set(value) - known - {"_target_"})
    if unknown:
        raise ValueError(f"{key} has unknown keys {unknown}; known: {', '.join(sorted(known))}")
    return cls(**{k: v for k, v in value.items() if k != "_target_"})


@dataclass
class RPGAlgoConfig(AlgoConfig):
    """verl's ``AlgoConfig`` plus ``policy_loss`` (a policy-loss registry name: an RPG loss or any verl built-in)
    and the ``rpg`` block. Selected with ``algorithm._target_=rpg_ext.config.RPGAlgoConfig`` (the recipe's yaml).

    Args:
        policy_loss (str): registry name of the actor's policy loss (``rpg_rkl``, ``vanilla``, ``gspo``, ...).
        rpg (RPGAlgorithmConfig): beta and clip of the RPG losses.
    """

    policy_loss: str = "vanilla"
    rpg: RPGAlgorithmConfig = field(default_factory=RPGAlgorithmConfig)

    def __post_init__(self):
        super_post_init = getattr(super(), "__post_init__", None)
        if super_post_init is not None:
            super_post_init()
        if not isinstance(self.policy_loss, str) or not self.policy_loss:
            raise ValueError(
                f"{_ALGO_KEY}.policy_loss must be a policy-loss registry name (for example rpg_rkl or vanilla), "
                f"got {self.policy_loss!r}"
            )
        if not isinstance(self.rpg, RPGAlgorithmConfig):
            object.__setattr__(self, "rpg", _block(RPGAlgorithmConfig, self.rpg, f"{_ALGO_KEY}.rpg"))
        from rpg_ext.kl_penalty import check_kl_penalty_name

        check_kl_penalty_name(self.kl_penalty, f"{_ALGO_KEY}.kl_penalty")
        rpg = self.rpg
        if rpg.kl.divergence is not None:
            if self.policy_loss.startswith("rpg_"):
                raise ValueError(
                    f"{_ALGO_KEY}.rpg.kl.divergence={rpg.kl.divergence} adds a KL regularizer, but "
                    f"{_ALGO_KEY}.policy_loss={self.policy_loss} already contains its KL term (beta * k): choose a "
                    f"non-RPG policy loss (vanilla, gspo, cispo, ...) or set {_ALGO_KEY}.rpg.kl.divergence=null"
                )
            if self.use_kl_in_reward:
                raise ValueError(
                    f"{_ALGO_KEY}.rpg.kl.divergence={rpg.kl.divergence} together with {_ALGO_KEY}.use_kl_in_reward=True "
                    f"would count a KL twice: set {_ALGO_KEY}.use_kl_in_reward=False"
                )
        if rpg.uses_reference_model and not (self.policy_loss.startswith("rpg_") or rpg.kl.divergence):
            raise ValueError(
                f"{_ALGO_KEY}.rpg.reference={rpg.reference} has nothing to act on: {_ALGO_KEY}.policy_loss="
                f"{self.policy_loss} is not an RPG loss and {_ALGO_KEY}.rpg.kl.divergence is null"
            )
        if self.policy_loss.startswith("rpg_"):
            validate_clip(self.rpg.clip, self.policy_loss, key=f"{_ALGO_KEY}.rpg.clip")
            if self.use_kl_in_reward:
                raise ValueError(
                    f"{_ALGO_KEY}.policy_loss={self.policy_loss} already contains its KL term (beta * k); "
                    f"{_ALGO_KEY}.use_kl_in_reward=True would add verl's KL penalty on top. Set "
                    f"{_ALGO_KEY}.use_kl_in_reward=False and choose beta with {_ALGO_KEY}.rpg.beta."
                )
