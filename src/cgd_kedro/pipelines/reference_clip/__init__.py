"""``reference_clip``: the CLIP model CGD scores with
(a local real CLIP, or the embedded one pretrained here)."""

from cgd_kedro.pipelines.reference_clip.pipeline import create_pipeline

__all__ = ["create_pipeline"]
