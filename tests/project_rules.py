"""The project's own server-optimizer rules before Flower's classes replaced them.

Kept as a reference (the numpy rules of ``strategies/server_optim.py`` at commit
cbbc543, verbatim in substance), and as a user's own ``FedOpt`` subclass that a
run-config can name by import path: ``server-optimizer="project_rules.ProjectYogi"``.

With ``delta = aggregated - current`` and ``t`` the number of steps so far:

- fedavgm:    v <- mu v + (-delta);  x <- x - lr v  (first step v = -delta)
- fedadagrad: m <- delta;  v <- v + delta^2
- fedadam:    m <- b1 m + (1-b1) delta; v <- b2 v + (1-b2) delta^2; lr bias-corrected
- fedyogi:    m as fedadam; v <- v - (1-b2) delta^2 sign(v - delta^2)
- adaptive:   x <- x + lr m / (sqrt(v) + eps)
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy.fedopt import FedOpt


@dataclass
class ProjectRule:
    """One optimizer state of the old numpy rules."""

    name: str
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-3
    steps: int = 0
    m_t: dict = field(default_factory=dict)
    v_t: dict = field(default_factory=dict)

    def step(self, current, aggregated):
        updated = self._update(current, aggregated)
        return {k: np.asarray(v, dtype=current[k].dtype) for k, v in updated.items()}

    def _update(self, current, aggregated):
        self.steps += 1
        delta = {k: aggregated[k] - current[k] for k in current}
        if self.name == "fedavgm":
            if not self.m_t:
                self.m_t = {k: -d for k, d in delta.items()}
            else:
                self.m_t = {k: self.momentum * self.m_t[k] - delta[k] for k in delta}
            return {k: current[k] - self.lr * self.m_t[k] for k in current}
        if not self.m_t:
            self.m_t = {k: np.zeros_like(d) for k, d in delta.items()}
            self.v_t = {k: np.zeros_like(d) for k, d in delta.items()}
        beta1 = 0.0 if self.name == "fedadagrad" else self.beta1
        self.m_t = {k: beta1 * self.m_t[k] + (1 - beta1) * delta[k] for k in delta}
        lr = self.lr
        if self.name == "fedadagrad":
            self.v_t = {k: self.v_t[k] + delta[k] ** 2 for k in delta}
        elif self.name == "fedadam":
            self.v_t = {
                k: self.beta2 * self.v_t[k] + (1 - self.beta2) * delta[k] ** 2
                for k in delta
            }
            t = self.steps + 1.0
            lr = self.lr * np.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        else:
            self.v_t = {
                k: v - (1 - self.beta2) * delta[k] ** 2 * np.sign(v - delta[k] ** 2)
                for k, v in self.v_t.items()
            }
        return {
            k: current[k] + lr * self.m_t[k] / (np.sqrt(self.v_t[k]) + self.eps)
            for k in current
        }


class ProjectYogi(FedOpt):
    """The old project FedYogi rule as a user's own Flower ``FedOpt`` subclass."""

    def __init__(
        self, *, eta: float = 1e-2, beta_1: float = 0.9, beta_2: float = 0.99, tau=1e-3
    ):
        super().__init__(eta=eta, beta_1=beta_1, beta_2=beta_2, tau=tau)
        self.rule = ProjectRule("fedyogi", lr=eta, beta1=beta_1, beta2=beta_2, eps=tau)

    def aggregate_train(self, server_round: int, replies: Iterable[Message]):
        record, metrics = super().aggregate_train(server_round, replies)
        aggregated = {k: v.numpy() for k, v in record.items()}
        self.rule.m_t, self.rule.v_t = self.m_t or {}, self.v_t or {}
        new = self.rule.step(dict(self.current_arrays), aggregated)
        self.m_t, self.v_t = (
            self.rule.m_t,
            self.rule.v_t,
        )  # moments live where Flower's do
        return ArrayRecord({k: Array(v) for k, v in new.items()}), MetricRecord(
            dict(metrics)
        )
