"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from cgd_kedro.hooks import ParameterCheckHooks

HOOKS = (ParameterCheckHooks(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
