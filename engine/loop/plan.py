"""A run's scheduled actions (RunConfig.at, `--at STEP:ACTION`), due at their steps.

    Plan(texts, start=0, resumed=False)   the actions still to come for a loop at step `start`
      .next                               the step of the next one (math.inf: none), which the loop compares its
                                          step with: nothing else is paid per step
      .due(step) -> [(command, value, data)]   the actions at `step` (and any the loop went past), as the
                                          commands a viewer sends (set_lr, pause, stop) plus "checkpoint";
                                          data is the event "scheduled" the loop records
      .replace(value, step) -> data       a viewer's new schedule (the command set_plan): it takes the place
                                          of every action still to come; data is the event "schedule"

An action at step S applies before step S runs, and before any flush or checkpoint at S: a run at step S
has done the actions of S, so its checkpoint holds them. At one step, lr comes first, then checkpoint,
pause and stop (engine/config/steering.py ACTIONS). A run that starts from a checkpoint at step c (a resume,
a fork) therefore has the actions up to c behind it, and applies those after c: the same steps, the same
rates, as a run that never stopped. The grammar and its refusals are engine/config/steering.py.
"""

from __future__ import annotations

import json
import math

from engine.config.steering import ACTIONS, Action, parse_action
from engine.errors import ConfigError

COMMANDS = {"lr": "set_lr", "checkpoint": "checkpoint", "pause": "pause", "stop": "stop"}
REASON = "schedule"  # a scheduled pause's reason, as a viewer's is "command"


class Plan:
    def __init__(self, texts=(), start: int = 0, resumed: bool = False):
        """texts: STEP:ACTION entries (validated with the config). resumed: the loop starts from a checkpoint at
        `start`, whose actions are done; else (a new run at step 0) the actions at `start` are still to come."""
        actions = [parse_action(t) for t in texts]
        self._set([a for a in actions if a.step > start or (a.step == start and not resumed)])

    def _set(self, actions: list[Action]):
        self._pending = sorted(actions, key=lambda a: (a.step, ACTIONS.index(a.kind)))
        self.next = self._pending[0].step if self._pending else math.inf

    @property
    def pending(self) -> list[str]:
        """The actions still to come, as the grammar writes them."""
        return [str(a) for a in self._pending]

    def due(self, step: int) -> list[tuple[str, object, dict]]:
        out = []
        while self._pending and self._pending[0].step <= step:
            a = self._pending.pop(0)
            value = a.value if a.kind == "lr" else REASON if a.kind == "pause" else None
            out.append((COMMANDS[a.kind], value, {"action": str(a), "at": a.step}))
        self.next = self._pending[0].step if self._pending else math.inf
        return out

    def replace(self, value, step: int) -> dict:
        """A viewer's new schedule, a JSON list of STEP:ACTION (engine/runs/api.py set_plan checked it), for a loop
        at `step`: the actions after `step` take the place of every pending one; those at or before it are past,
        and left out. A value that is not such a list changes nothing, and the event says why."""
        old = self.pending
        try:
            texts = json.loads(value)
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ValueError("not a list of text")
            actions = [parse_action(t) for t in texts]
        except (ValueError, TypeError, ConfigError) as e:  # a JSONDecodeError is a ValueError
            return {"old": old, "new": old, "refused": str(e)}
        self._set([a for a in actions if a.step > step])
        return {"old": old, "new": self.pending, "past": [str(a) for a in actions if a.step <= step]}
