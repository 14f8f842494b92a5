"""The frontier of tokens/s per GPU against tokens/s per user, by sweeping the TPOT limit.

A tighter TPOT limit means faster tokens for each user (``1000 / TPOT`` tokens/s) and smaller
batches, so fewer tokens/s per GPU. For each factor ``f`` in the sweep the planner is re-run with
every workload's TPOT limit times ``f`` (the TTFT limits, pools and objective unchanged; the
candidates' cost-model profiles are reused, only the limits change), and the plan's aggregate
output tokens/s per GPU and its tokens/s per user (averaged over the requests) make one point.
A point is on the frontier when no other point has at least its tokens/s per user and more
tokens/s per GPU.
"""

from __future__ import annotations

import io

from pydantic import BaseModel, ConfigDict

from servingcast.planner.plan import Plan

#: TPOT-limit factors of the default sweep (1.0 is the problem's own SLO).
DEFAULT_FACTORS = (0.4, 0.55, 0.7, 0.85, 1.0, 1.25, 1.6, 2.0)


class ParetoPoint(BaseModel):
    """One sweep point: the TPOT factor and what the best plan achieves with it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tpot_factor: float
    tpot_limit_ms: float
    tokens_per_s_per_user: float
    tokens_per_s_per_gpu: float
    output_tokens_per_s: float
    served_rate_per_s: float
    gpus: int
    mode: str
    on_frontier: bool = False


def point_of(plan: Plan, factor: float) -> ParetoPoint:
    """The sweep point of a plan solved with TPOT limits times ``factor``."""
    weight = sum(w.served_rate_per_s for w in plan.workloads)
    per_user = (sum(w.tokens_per_s_per_user * w.served_rate_per_s for w in plan.workloads)
                / weight if weight > 0 else 0.0)
    return ParetoPoint(
        tpot_factor=factor, tpot_limit_ms=plan.workloads[0].tpot_limit_ms * factor,
        tokens_per_s_per_user=per_user, tokens_per_s_per_gpu=plan.tokens_per_s_per_gpu,
        output_tokens_per_s=plan.output_tokens_per_s, served_rate_per_s=plan.served_rate_per_s,
        gpus=plan.total_gpus, mode=plan.mode)


def mark_frontier(points: list[ParetoPoint]) -> tuple[ParetoPoint, ...]:
    """Flag the non-dominated points (of equal points, the one with the tightest TPOT limit);
    sorted by tokens/s per user."""
    out = []
    for p in points:
        key = (p.tokens_per_s_per_user, p.tokens_per_s_per_gpu)
        dominated = any(
            (q.tokens_per_s_per_user, q.tokens_per_s_per_gpu) != key
            and q.tokens_per_s_per_user >= p.tokens_per_s_per_user
            and q.tokens_per_s_per_gpu >= p.tokens_per_s_per_gpu
            for q in points)
        twin = any((q.tokens_per_s_per_user, q.tokens_per_s_per_gpu) == key
                   and q.tpot_factor < p.tpot_factor for q in points)
        out.append(p.model_copy(update={"on_frontier": not dominated and not twin}))
    return tuple(sorted(out, key=lambda p: (p.tokens_per_s_per_user, p.tpot_factor)))


def pareto_csv(points: tuple[ParetoPoint, ...]) -> str:
    """The points as CSV, units in the header."""
    lines = ["tpot_factor,tpot_limit_ms,tokens_per_s_per_user,tokens_per_s_per_gpu,"
             "output_tokens_per_s,served_rate_per_s,gpus,mode,on_frontier"]
    for p in points:
        lines.append(f"{p.tpot_factor:g},{p.tpot_limit_ms:.3f},{p.tokens_per_s_per_user:.3f},"
                     f"{p.tokens_per_s_per_gpu:.3f},{p.output_tokens_per_s:.3f},"
                     f"{p.served_rate_per_s:.4f},{p.gpus},{p.mode},"
                     f"{'true' if p.on_frontier else 'false'}")
    return "\n".join(lines) + "\n"


def pareto_png(points: tuple[ParetoPoint, ...], title: str, chosen: ParetoPoint | None) -> bytes:
    """The frontier as a PNG (matplotlib, imported here: it is slow to import)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # The object API on an Agg canvas: no pyplot, no process-wide backend switch.
    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    all_x = [p.tokens_per_s_per_user for p in points]
    all_y = [p.tokens_per_s_per_gpu for p in points]
    ax.scatter(all_x, all_y, color="0.6", label="sweep points", zorder=2)
    front = [p for p in points if p.on_frontier]
    ax.plot([p.tokens_per_s_per_user for p in front], [p.tokens_per_s_per_gpu for p in front],
            "-o", color="tab:blue", label="frontier", zorder=3)
    for p in front:
        ax.annotate(f"TPOT≤{p.tpot_limit_ms:.0f} ms", (p.tokens_per_s_per_user,
                                                       p.tokens_per_s_per_gpu),
                    textcoords="offset points", xytext=(4, 4), fontsize=7)
    if chosen is not None:
        ax.scatter([chosen.tokens_per_s_per_user], [chosen.tokens_per_s_per_gpu], marker="*",
                   s=180, color="tab:red", label="chosen plan", zorder=4)
    ax.set_xlabel("tokens/s per user (1000 / TPOT ms)")
    ax.set_ylabel("output tokens/s per GPU")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
