"""Server optimizers on the pseudo-gradient (pure numpy).

The update rules are Flower's (``flwr.serverapp.strategy``: ``FedAvgM``, ``FedAdam``,
``FedAdagrad``, ``FedYogi``; Reddi et al., "Adaptive Federated Optimization", ICLR
2021, Alg. 2; Hsu et al., 2019 for FedAvgM), written over plain dicts of arrays so
that DISCO can keep one optimizer state per subspace. ``tests/test_server_optim.py``
checks them against Flower's strategy classes.

With ``delta = aggregated - current``:

- fedavg:     x <- aggregated
- fedavgm:    v <- mu v + (-delta);  x <- x - lr v  (first step v = -delta)
- fedadagrad: m <- delta (Flower fixes b1 = 0);  v <- v + delta^2
- fedadam:    m as above; v <- b2 v + (1-b2) delta^2; lr bias-corrected by step t
- fedyogi:    m as above; v <- v - (1-b2) delta^2 sign(v - delta^2)
- adaptive:   x <- x + lr m / (sqrt(v) + eps)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

Arrays = dict[str, np.ndarray]


@dataclass
class ServerOptimizer:
    """One server optimizer with its state.

    Parameters
    ----------
    name : str
        ``fedavg``, ``fedavgm``, ``fedadam``, ``fedadagrad`` or ``fedyogi``.
    lr : float
        Server learning rate (eta).
    momentum : float
        FedAvgM momentum.
    beta1, beta2 : float
        First- and second-moment decay of the adaptive optimizers.
    eps : float
        Adaptivity (Flower's ``tau``).
    """

    name: str = "fedavg"
    lr: float = 1.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-3
    step_count: int = 0
    m_t: Arrays = field(default_factory=dict)
    v_t: Arrays = field(default_factory=dict)

    def step(self, current: Arrays, aggregated: Arrays) -> Arrays:
        """Return the new global arrays given the current and the averaged ones.

        The result keeps each array's dtype (the bias-corrected FedAdam rate is a
        float64 scalar and would otherwise upcast float32 adapters, which every
        later upload would then fail to match).
        """
        updated = self._update(current, aggregated)
        return {k: np.asarray(v, dtype=current[k].dtype) for k, v in updated.items()}

    def _update(self, current: Arrays, aggregated: Arrays) -> Arrays:
        self.step_count += 1
        if self.name == "fedavg":
            return {k: np.asarray(v).copy() for k, v in aggregated.items()}
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
            # Flower's FedAdam bias correction, with its ``server_round + 1``.
            t = self.step_count + 1.0
            lr = self.lr * np.sqrt(1 - self.beta2**t) / (1 - self.beta1**t)
        elif self.name == "fedyogi":
            self.v_t = {
                k: v - (1 - self.beta2) * delta[k] ** 2 * np.sign(v - delta[k] ** 2)
                for k, v in self.v_t.items()
            }
        else:
            raise ValueError(f"unknown server optimizer {self.name!r}")
        return {
            k: current[k] + lr * self.m_t[k] / (np.sqrt(self.v_t[k]) + self.eps)
            for k in current
        }

    def state_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The moments as flat arrays under ``prefix`` (for checkpoints)."""
        out = {f"{prefix}m/{k}": v for k, v in self.m_t.items()}
        out.update({f"{prefix}v/{k}": v for k, v in self.v_t.items()})
        return out

    def load_state_arrays(
        self, arrays: dict[str, np.ndarray], prefix: str, step_count: int
    ) -> None:
        """Restore what :meth:`state_arrays` saved (and the step count)."""
        self.step_count = step_count
        self.m_t = _strip(arrays, f"{prefix}m/")
        self.v_t = _strip(arrays, f"{prefix}v/")


def _strip(arrays: dict[str, np.ndarray], prefix: str) -> Arrays:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}
