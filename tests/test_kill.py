"""kill -9 while writing: every writer scenario (write_scenarios.py) is run
in a forked process that is killed with SIGKILL while it replaces the
previous target, at random moments and, for checkpoint sets, at each step of
the commit protocol (docs/sharding.md). After each kill:

- every reader rule, read with the reference ``safetensors`` package, sees
  the complete previous version or the complete new one;
- what the killed writer left (temporary files, staging directories,
  interim shards) is ignored by those readers, and the next save of the
  same target removes it.

A few trials for some writers in the default run; many for every writer
with ``pytest -m slow``
(docs/security.md records the counts)."""

from __future__ import annotations

import os
import random

import pytest

import write_scenarios as ws


@pytest.fixture(scope="module")
def worker():
    w = ws.Worker()
    yield w
    w.close()


class KillProbe:
    def __init__(self, scenario: ws.Scenario, root: str, worker: ws.Worker):
        self.scenario = scenario
        self.worker = worker
        self.sandbox = os.path.join(os.path.realpath(root), "sandbox")
        os.makedirs(self.sandbox)
        scenario.setup(self.sandbox)
        self.before = ws.snapshot(self.sandbox)
        self.old_views = ws.reader_views(self.sandbox, scenario)
        for _ in range(2):  # the second run is timed: the first pays for lazy imports
            reply = self.run({})
            assert not reply["killed"] and reply["exit"] == 0, reply
        self.duration = reply["elapsed"]
        self.new_views = ws.reader_views(self.sandbox, scenario)
        self.after_names = set(ws.snapshot(self.sandbox))
        self.counts = {"killed": 0, "finished": 0, "old": 0, "new": 0}

    def run(self, kill: dict) -> dict:
        return self.worker({"scenario": self.scenario.name, "sandbox": self.sandbox, "version": 1, "kill": kill})

    def trial(self, kill: dict, label: str) -> bool:
        """Kills one writer; checks the target and the clean-up. Returns
        whether the process was killed before it finished."""
        ws.restore(self.sandbox, self.before)
        reply = self.run(kill)
        killed = reply["killed"]
        assert killed or reply["exit"] == 0, f"{label}: the writer failed: {reply}"
        try:
            views = ws.reader_views(self.sandbox, self.scenario)
        except ws.IncompleteTarget as e:
            raise AssertionError(f"{self.scenario.name} {label}: incomplete target after the kill: {e}") from None
        if not views:
            assert not self.old_views, f"{label}: the previous target vanished"
        for view in views:
            if view in self.old_views:
                self.counts["old"] += 1
            elif view in self.new_views:
                self.counts["new"] += 1
            else:
                raise AssertionError(f"{self.scenario.name} {label}: the target is neither version")
        self.counts["killed" if killed else "finished"] += 1
        # The next save cleans up after the killed one.
        reply = self.run({})
        assert not reply["killed"] and reply["exit"] == 0, reply
        assert ws.reader_views(self.sandbox, self.scenario) == self.new_views
        left = set(ws.snapshot(self.sandbox)) - self.after_names
        assert not left, f"{self.scenario.name} {label}: the next save left {sorted(left)}"
        return killed


def run_trials(name: str, tmp_path, worker, random_trials: int, every_step: bool, seed: int) -> dict:
    scenario = ws.SCENARIOS[name]
    if scenario.needs_torch:
        pytest.importorskip("torch")
    probe = KillProbe(scenario, str(tmp_path), worker)
    rng = random.Random(seed)
    for i in range(random_trials):
        # Uniform over the writer's run, a little past its end.
        probe.trial({"delay": rng.uniform(0, probe.duration * 1.1)}, f"random kill {i}")
    steps = 0
    if every_step and scenario.is_set:
        while probe.trial({"step": steps}, f"kill at step {steps}"):
            steps += 1
            assert steps < 200
        assert steps > 0, "the commit never reached a step"
    print(f"{name}: {sum(probe.counts[k] for k in ('killed', 'finished'))} trials, {probe.counts}, "
          f"{steps} commit steps, run {probe.duration * 1e3:.1f} ms")
    return probe.counts


# The default run: one writer of each kind (a file, a file converted in place,
# a set over the same names, a converted set, a model save), a few kills each.
QUICK = ["numpy.save_file", "convert_file:in-place", "save_sharded:three->three", "convert_file:directory",
         "save_pretrained"]


@pytest.mark.parametrize("name", QUICK)
def test_killed_writer_leaves_old_or_new(name, tmp_path, worker):
    run_trials(name, tmp_path, worker, random_trials=4, every_step=False, seed=0)


# Sets with a config.json: weights and config must change together.
WITH_CONFIG = ["save_pretrained", "convert_file:directory"]


@pytest.mark.parametrize("name", WITH_CONFIG)
def test_killed_at_every_commit_step_weights_and_config_stay_one_version(name, tmp_path, worker):
    run_trials(name, tmp_path, worker, random_trials=0, every_step=True, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ws.SCENARIOS))
def test_killed_writer_many_trials(name, tmp_path, worker):
    run_trials(name, tmp_path, worker, random_trials=100, every_step=True, seed=1)
