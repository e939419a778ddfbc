"""Backdoor attacks: batched trigger functions, the attack registry and the poisoning procedure."""

from cgd_kedro.attacks.base import Attack, AttackContext, register_attack
from cgd_kedro.attacks.registry import attack_class, build_attack, list_attacks

__all__ = [
    "Attack",
    "AttackContext",
    "attack_class",
    "build_attack",
    "list_attacks",
    "register_attack",
]
