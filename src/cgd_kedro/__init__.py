"""cgd_kedro: CLIP-guided backdoor defense (CGD) and adversarial backdoor defense for CLIP (ABD)."""

__version__ = "0.1.0"
