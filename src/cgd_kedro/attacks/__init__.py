"""Backdoor attacks: batched trigger functions and the poisoning of training/test sets."""

from cgd_kedro.attacks.registry import ATTACKS, get_trigger, list_attacks

__all__ = ["ATTACKS", "get_trigger", "list_attacks"]
