"""Configuration of the RPG losses, the reference and the KL regularizer: typed dataclasses for verl's config system.

Each value is validated once, in the ``__post_init__`` of the dataclass that defines it (as verl does).

The losses read verl's actor config (``config`` of every policy loss):

    config.policy_loss.rpg.beta          beta >= 0 (default 1e-4, the paper's value)            RPGConfig
    config.policy_loss.rpg.clip          'dual' (default) | 'alg1' | 'truncate' | 'none'        RPGConfig
    config.clip_ratio_low / _high        eps_low / eps_high (each falls back to config.clip_ratio when null)
    config.clip_ratio_c                  c, the dual-clip bound (> 1)                           RPGParams

``config`` may be verl's ``ActorConfig`` whose ``policy_loss`` is an :class:`RPGPolicyLossConfig`
(selected with ``actor_rollout_ref.actor.policy_loss._target_=rpg_ext.config.RPGPolicyLossConfig``), or a plain
OmegaConf ``DictConfig`` / dict carrying the same keys. A missing ``policy_loss.rpg`` block means the defaults.

The recipe's ``algorithm`` block (:class:`RPGAlgoConfig`: ``algorithm.policy_loss`` and ``algorithm.rpg``) is what a
user sets; the recipe's yaml wires ``policy_loss``, ``rpg.beta`` and ``rpg.clip`` into the actor's keys above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

from verl.base_config import BaseConfig
from verl.trainer.config import AlgoConfig
from verl.workers.config import PolicyLossConfig

from rpg_ext import DIVERGENCES
from rpg_ext.kl_penalty import check_kl_penalty_name

CLIP_MODES = ("dual", "alg1", "truncate", "none")
#: ``algorithm.rpg.reference``: pi_ref is the sampling policy of the step, the initial model, or a refreshed copy.
REFERENCE_MODES = ("sampling", "fixed", "periodic")
DEFAULT_BETA = 1e-4
DEFAULT_CLIP = "dual"
#: verl's own default for ``clip_ratio_c`` (used by its ``vanilla`` loss when the key is absent).
VERL_DEFAULT_CLIP_RATIO_C = 3.0
#: Losses on which ``clip=alg1`` (the paper's Algorithm 1 as printed) keeps the objective's gradient: for the
#: forward divergences its gradient through A_hat = A + C/w cancels the KL term's (the loss -w * A_hat is
#: -w * A - beta * rho), so Algorithm 1 as printed would train them with no KL at all.
ALG1_LOSSES = ("rpg_rkl", "rpg_urkl")

ACTOR = "actor_rollout_ref.actor"
ALGO = "algorithm"


def validate_beta(beta: Any, key: str) -> float:
    """The one rule for a KL strength (the RPG losses' beta and the regularizer's)."""
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0:
        raise ValueError(f"{key} must be a finite number >= 0 (a KL strength), got {beta!r}")
    return float(beta)


def validate_clip(clip: Any, loss_name: str | None, key: str) -> str:
    """The one rule for a clip mode, alone (``loss_name=None``) and for a given RPG loss."""
    if clip not in CLIP_MODES:
        raise ValueError(f"{key} must be one of {list(CLIP_MODES)}, got {clip!r}")
    if loss_name is None or not loss_name.startswith("rpg_"):
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


def refuse_double_kl(actor_config: Any, what: str) -> None:
    """An RPG KL term (a loss's beta * k, the regularizer) and verl's KL loss together would count the KL twice."""
    if _get(actor_config, "use_kl_loss", False):
        raise ValueError(
            f"{what} already adds a KL term; {ACTOR}.use_kl_loss=True would add verl's KL loss on top and count the "
            f"KL twice. Set {ACTOR}.use_kl_loss=False (beta is algorithm.rpg.beta / algorithm.rpg.kl.beta)"
        )


def _get(cfg: Any, key: str, default: Any = None) -> Any:
    if cfg is None:
        return default
    if isinstance(cfg, Mapping):  # DictConfig, dict and verl's BaseConfig are all Mappings
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _block(cls, value, key: str):
    """A dict-like config block -> its dataclass, naming unknown keys."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{key} must be a mapping, got {type(value).__name__}")
    known = {f for f in cls.__dataclass_fields__ if f != "_target_"}
    unknown = sorted(set(value) - known - {"_target_"})
    if unknown:
        raise ValueError(f"{key} has unknown keys {unknown}; known: {', '.join(sorted(known))}")
    return cls(**{k: v for k, v in value.items() if k != "_target_"})


@dataclass
class RPGConfig(BaseConfig):
    """The ``rpg`` block of the policy-loss config (and, extended, of ``algorithm``).

    Args:
        beta (float): KL strength beta >= 0 (paper: 1e-4).
        clip (str): 'dual' (rpg_*: verl's dual clip on A, KL term outside it, as the released code runs;
            rpg_reinforce_*: Algorithm 2's RPG-Style Clip), 'alg1' (rpg_rkl, rpg_urkl: Algorithm 1 as printed, the
            dual clip on A_hat = A + C/w with the KL inside), 'truncate' (rpg_reinforce_* only: w -> w_bar in SG,
            Remark F.2), or 'none'.
    """

    beta: float = DEFAULT_BETA
    clip: str = DEFAULT_CLIP
    _key = f"{ACTOR}.policy_loss.rpg"

    def __post_init__(self):
        validate_beta(self.beta, f"{self._key}.beta")
        validate_clip(self.clip, None, f"{self._key}.clip")


@dataclass
class RPGPolicyLossConfig(PolicyLossConfig):
    """verl's ``PolicyLossConfig`` plus the ``rpg`` block; select with
    ``actor_rollout_ref.actor.policy_loss._target_=rpg_ext.config.RPGPolicyLossConfig``."""

    rpg: RPGConfig = field(default_factory=RPGConfig)

    def __post_init__(self):
        super_post_init = getattr(super(), "__post_init__", None)
        if super_post_init is not None:
            super_post_init()
        object.__setattr__(self, "rpg", _block(RPGConfig, self.rpg, f"{ACTOR}.policy_loss.rpg"))  # frozen after init
        validate_clip(self.rpg.clip, self.loss_mode, f"{ACTOR}.policy_loss.rpg.clip")


@dataclass(frozen=True)
class RPGParams:
    """The hyperparameters of one RPG loss call: the rpg block and verl's clip ratios as the loss reads them."""

    beta: float
    clip: str
    eps_low: float
    eps_high: float
    clip_c: float

    def __post_init__(self):
        for key, value in (("clip_ratio_low", self.eps_low), ("clip_ratio_high", self.eps_high),
                           ("clip_ratio_c", self.clip_c)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{ACTOR}.{key} must be a finite number (falling back to {ACTOR}.clip_ratio when "
                                 f"null), got {value!r}")
        if not 0 < self.eps_low < 1:
            raise ValueError(f"{ACTOR}.clip_ratio_low (eps_low) must lie in (0, 1), got {self.eps_low!r}")
        if not self.eps_high > 0:
            raise ValueError(f"{ACTOR}.clip_ratio_high (eps_high) must be > 0, got {self.eps_high!r}")
        if not self.clip_c > 1:
            raise ValueError(f"{ACTOR}.clip_ratio_c (dual-clip bound c) must be > 1, got {self.clip_c!r}")


def resolve_params(config: Any, loss_name: str) -> RPGParams:
    """The RPG hyperparameters of ``loss_name`` from verl's actor config (validated by the dataclasses)."""
    if config is None:
        raise ValueError(f"{loss_name} needs verl's actor config (policy_loss.rpg, clip ratios); got config=None")
    refuse_double_kl(config, loss_name)
    rpg = _get(_get(config, "policy_loss"), "rpg")
    rpg = RPGConfig() if rpg is None else _block(RPGConfig, rpg, f"{ACTOR}.policy_loss.rpg")
    validate_clip(rpg.clip, loss_name, f"{ACTOR}.policy_loss.rpg.clip")
    clip_ratio = _get(config, "clip_ratio")
    eps_low, eps_high = _get(config, "clip_ratio_low"), _get(config, "clip_ratio_high")
    clip_c = _get(config, "clip_ratio_c")
    return RPGParams(
        beta=rpg.beta, clip=rpg.clip,
        eps_low=clip_ratio if eps_low is None else eps_low,
        eps_high=clip_ratio if eps_high is None else eps_high,
        clip_c=VERL_DEFAULT_CLIP_RATIO_C if clip_c is None else clip_c,
    )


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
        if self.divergence is not None and self.divergence not in DIVERGENCES:
            raise ValueError(
                f"{ALGO}.rpg.kl.divergence must be one of {list(DIVERGENCES)} or null, got {self.divergence!r}"
            )
        validate_beta(self.beta, f"{ALGO}.rpg.kl.beta")


@dataclass
class RPGAlgorithmConfig(RPGConfig):
    """``algorithm.rpg``: the RPG hyperparameters a user sets (beta and clip, as in :class:`RPGConfig`, are fed to the
    actor's ``policy_loss.rpg``; the reference and the KL regularizer are run by the recipe's trainer).

    Args:
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

    reference: str = "sampling"
    reference_every: Optional[int] = None
    reference_kl_target: Optional[float] = None
    reference_kl_decay: float = 0.9
    kl: RPGKLConfig = field(default_factory=RPGKLConfig)
    _key = f"{ALGO}.rpg"

    def __post_init__(self):
        super().__post_init__()
        key = self._key
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


@dataclass
class RPGAlgoConfig(AlgoConfig):
    """verl's ``AlgoConfig`` plus ``policy_loss`` (a policy-loss registry name: an RPG loss or any verl built-in)
    and the ``rpg`` block. Selected with ``algorithm._target_=rpg_ext.config.RPGAlgoConfig`` (the recipe's yaml).

    Args:
        policy_loss (str): registry name of the actor's policy loss (``rpg_rkl``, ``vanilla``, ``gspo``, ...).
        rpg (RPGAlgorithmConfig): beta, clip, reference and KL regularizer.
    """

    policy_loss: str = "vanilla"
    rpg: RPGAlgorithmConfig = field(default_factory=RPGAlgorithmConfig)

    def __post_init__(self):
        super_post_init = getattr(super(), "__post_init__", None)
        if super_post_init is not None:
            super_post_init()
        if not isinstance(self.policy_loss, str) or not self.policy_loss:
            raise ValueError(
                f"{ALGO}.policy_loss must be a policy-loss registry name (for example rpg_rkl or vanilla), "
                f"got {self.policy_loss!r}"
            )
        object.__setattr__(self, "rpg", _block(RPGAlgorithmConfig, self.rpg, f"{ALGO}.rpg"))
        check_kl_penalty_name(self.kl_penalty, f"{ALGO}.kl_penalty")
        rpg, rpg_loss = self.rpg, self.policy_loss.startswith("rpg_")
        validate_clip(rpg.clip, self.policy_loss, f"{ALGO}.rpg.clip")
        if rpg.kl.divergence is not None:
            if rpg_loss:
                raise ValueError(
                    f"{ALGO}.rpg.kl.divergence={rpg.kl.divergence} adds a KL regularizer, but "
                    f"{ALGO}.policy_loss={self.policy_loss} already contains its KL term (beta * k): choose a "
                    f"non-RPG policy loss (vanilla, gspo, cispo, ...) or set {ALGO}.rpg.kl.divergence=null"
                )
            if self.use_kl_in_reward:
                raise ValueError(
                    f"{ALGO}.rpg.kl.divergence={rpg.kl.divergence} together with {ALGO}.use_kl_in_reward=True "
                    f"would count a KL twice: set {ALGO}.use_kl_in_reward=False"
                )
        if rpg.uses_reference_model and not (rpg_loss or rpg.kl.divergence):
            raise ValueError(
                f"{ALGO}.rpg.reference={rpg.reference} has nothing to act on: {ALGO}.policy_loss="
                f"{self.policy_loss} is not an RPG loss and {ALGO}.rpg.kl.divergence is null"
            )
        if rpg_loss and self.use_kl_in_reward:
            raise ValueError(
                f"{ALGO}.policy_loss={self.policy_loss} already contains its KL term (beta * k); "
                f"{ALGO}.use_kl_in_reward=True would add verl's KL penalty on top. Set "
                f"{ALGO}.use_kl_in_reward=False and choose beta with {ALGO}.rpg.beta."
            )
