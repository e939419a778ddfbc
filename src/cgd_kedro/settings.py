"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from cgd_kedro.hooks import AccelerationHooks, NodeTimingHooks, ParameterCheckHooks, RunRecordHooks
from cgd_kedro.tracking import MlflowTrackingHooks

# pluggy calls the last registered first: the parameter check runs before anything else.
# MlflowTrackingHooks' hooks are `tryfirst` (they must run before kedro-mlflow's, a plugin).
HOOKS = (
    RunRecordHooks(),
    AccelerationHooks(),
    NodeTimingHooks(),
    ParameterCheckHooks(),
    MlflowTrackingHooks(),
)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Environments override single keys (e.g. conf/cifar10 sets only
    # dataset.root), not whole sections.
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
}
