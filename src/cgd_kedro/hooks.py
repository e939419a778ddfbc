"""Project hooks."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl

from cgd_kedro.parameters import check_run_parameters


class ParameterCheckHooks:
    """Check every parameter the run will use before the first node starts.

    A bad value therefore stops the run before any data is generated or model trained, and,
    since nothing is saved, earlier versioned outputs stay as they were.
    """

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        namespaces = {node.namespace.split(".")[0] for node in pipeline.nodes if node.namespace}
        builds_reference_clip = any(node.name == "clip.build_reference_clip" for node in pipeline.nodes)
        check_run_parameters(catalog.load("parameters"), namespaces, builds_reference_clip)
