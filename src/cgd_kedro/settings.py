"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from cgd_kedro.hooks import AccelerationHooks, NodeTimingHooks, ParameterCheckHooks

HOOKS = (ParameterCheckHooks(), AccelerationHooks(), NodeTimingHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Environments override single keys (e.g. conf/cifar10 sets only dataset.root), not whole sections.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
}
