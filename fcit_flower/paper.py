"""The FCIT paper's reported numbers, for ``fcit-flower compare --paper``.

Guo et al., "Federated Continual Instruction Tuning", ICCV 2025 (arXiv 2503.12897):
LLaVA-1.5-7B on the real FCIT data, task-related setting, beta = 1.0. Shown next to
our table, never mixed into it: our runs use a tiny model on mini-FCIT.
"""

from __future__ import annotations

# method -> (Hom Last, Hom Avg, Het Last, Het Avg); None = not reported.
PAPER_RESULTS: dict[str, tuple[float | None, ...]] = {
    "zeroshot": (29.08, None, None, None),
    "mtl": (66.60, None, None, None),
    "finetune": (47.20, 68.79, 57.96, 54.22),
    "ewc": (47.92, 69.22, None, None),
    "olora": (49.87, 70.26, 59.74, 55.20),
    "mlora": (48.53, 71.58, None, None),
    "moelora": (49.02, 70.65, 59.14, 54.69),
    "disco": (56.22, 73.03, 63.25, 61.99),
}

PAPER_TITLE = (
    "Paper's numbers (Guo et al., ICCV 2025: LLaVA-1.5-7B, real FCIT data, "
    "task-related, beta=1.0; NOT comparable with the table above)"
)


def paper_table(methods: list[str]) -> str:
    """Markdown table of the paper's numbers for ``methods`` (known ones only)."""
    lines = [
        "| Method (paper) | Hom Last | Hom Avg | Het Last | Het Avg |",
        "|---|---|---|---|---|",
    ]
    for method in methods:
        if method in PAPER_RESULTS:
            cells = ["-" if v is None else f"{v:.2f}" for v in PAPER_RESULTS[method]]
            lines.append(f"| {method} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"
