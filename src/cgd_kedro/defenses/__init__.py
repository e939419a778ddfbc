"""Backdoor defenses other than CGD itself (the peers and the clean-data defenses CGD can feed)."""
