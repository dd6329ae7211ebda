"""The console's Quality page: stored `rag_eval` runs, a small chart of each figure across runs
(server-rendered SVG, no script, no CDN), and each run's misses.

Superusers only: a run's misses quote questions, answers and passages of the evaluated corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from retrieval.models import EvalRun

RUNS_SHOWN = 50
# (key in EvalRun.figures, path inside it, label, column): the figures charted across runs.
CHARTED = [
    ("distinct", ("hybrid", "hit_at_1"), "Right document first (hybrid)", "Doc first"),
    ("distinct", ("hybrid", "hit_at_5"), "Right document in top 5 (hybrid)", "Doc top 5"),
    ("in_context", ("hybrid",), "Right document among the passages answered from", "In context"),
    ("answers", ("text_contains",), "Answer holds the expected text", "Answer text"),
    ("answers", ("citation_contains",), "A cited passage holds it", "Cited text"),
    ("answers", ("citation_precision",), "Citation precision", "Precision"),
    ("answers", ("answered",), "Answerable questions answered", "Answered"),
    ("answers", ("declined",), "Unanswerable questions declined", "Declined"),
]
CHART_WIDTH, CHART_HEIGHT, PAD = 240, 60, 4


@dataclass(frozen=True)
class Chart:
    label: str
    latest: float | None
    points: str  # SVG polyline points, oldest run on the left; "" when fewer than 2 values
    dots: list[tuple[float, float, str]]  # (x, y, tooltip) per run that has the figure


def figure(run: EvalRun, key: str, path: tuple[str, ...]) -> float | None:
    value = run.figures.get(key)
    for step in path:
        if not isinstance(value, dict):
            return None
        value = value.get(step)
    return float(value) if isinstance(value, int | float) else None


def chart(runs: list[EvalRun], key: str, path: tuple[str, ...], label: str) -> Chart:
    """A 0..1 figure across `runs` (oldest first) as SVG coordinates."""
    values = [(run, figure(run, key, path)) for run in runs]
    present = [
        (index, run, value) for index, (run, value) in enumerate(values) if value is not None
    ]
    span = max(len(runs) - 1, 1)
    dots = [
        (
            round(PAD + index * (CHART_WIDTH - 2 * PAD) / span, 1),
            round(CHART_HEIGHT - PAD - max(0.0, min(1.0, value)) * (CHART_HEIGHT - 2 * PAD), 1),
            f"{run.created_at:%Y-%m-%d %H:%M} · {run.questions_file}: {value:.3f}",
        )
        for index, run, value in present
    ]
    points = " ".join(f"{x},{y}" for x, y, _ in dots) if len(dots) > 1 else ""
    return Chart(label, present[-1][2] if present else None, points, dots)


def _require_admin(request: HttpRequest) -> None:
    if not request.user.is_superuser:
        raise PermissionDenied("The Quality page is for administrators.")


@login_required
@require_GET
def quality(request: HttpRequest) -> HttpResponse:
    _require_admin(request)
    runs = list(EvalRun.objects.all()[:RUNS_SHOWN])
    files = sorted({run.questions_file for run in runs})
    chosen = request.GET.get("questions") or (runs[0].questions_file if runs else "")
    series = [run for run in reversed(runs) if run.questions_file == chosen]
    rows = [
        {
            "run": run,
            "figures": [figure(run, key, path) for key, path, *_ in CHARTED],
            "latency": figure(run, "answers", ("latency_p95_s",)),
        }
        for run in runs
    ]
    return render(
        request,
        "console/quality.html",
        {
            "rows": rows,
            "columns": [(label, column) for *_, label, column in CHARTED],
            "charts": [chart(series, key, path, label) for key, path, label, _ in CHARTED],
            "files": files,
            "chosen": chosen,
            "width": CHART_WIDTH,
            "height": CHART_HEIGHT,
        },
    )


@login_required
@require_GET
def quality_run(request: HttpRequest, pk: int) -> HttpResponse:
    _require_admin(request)
    run = get_object_or_404(EvalRun, pk=pk)
    return render(
        request,
        "console/quality_run.html",
        {"run": run, "misses": run.misses, "figures": run.figures},
    )
