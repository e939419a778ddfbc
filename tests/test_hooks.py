"""NodeTimingHooks: a node's time runs from its first input load to its last output save."""

from __future__ import annotations

import re
from types import SimpleNamespace

from cgd_kedro import hooks
from cgd_kedro.hooks import NodeTimingHooks


def test_the_summary_ranks_nodes_by_their_load_to_save_time(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(hooks.time, "perf_counter", lambda: now[0])
    timing = NodeTimingHooks(slowest=1)
    fast, slow = SimpleNamespace(name="a.fast"), SimpleNamespace(name="b.slow")

    def at(t: float, call, *args) -> None:
        now[0] = t
        call(*args)

    at(0, timing.before_pipeline_run)
    at(1, timing.before_dataset_loaded, fast)  # the first input load starts the clock
    at(2, timing.before_node_run, fast)  # ... a later start does not move it
    at(3, timing.after_dataset_saved, fast)
    at(5, timing.after_dataset_saved, fast)  # the last save stops it: 4 s
    at(6, timing.after_node_run, fast)  # ... the node's own end does not override a save
    at(9, timing.before_dataset_loaded, slow)
    at(10, timing.after_node_run, slow)  # a node ends when it has run (1 s) unless it saves later
    at(11, timing.after_dataset_saved, slow)  # 2 s
    at(12, timing.before_dataset_loaded, None)  # loads outside a node are ignored
    now[0] = 40.0  # the run took 40 s
    assert timing.node_seconds == {"a.fast": 4.0, "b.slow": 2.0}
    first, *rest = timing.summary().splitlines()
    assert re.fullmatch(
        r"Run finished in 0\.7 min \(2 nodes\); peak memory \d+\.\d\d GiB resident; slowest nodes:",
        first,
    ), first
    assert rest == ["       4.0 s   10.0 %  a.fast"]
