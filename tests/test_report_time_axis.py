"""The plots' time axis reads m:ss: a run of a few seconds gets whole-second ticks, never two
ticks with the same label (half seconds read 0:00, 0:00, 0:01, 0:01)."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from pipeline.observe.report_charts import _time_axis


@pytest.mark.parametrize("end", [1.2, 3.0, 4.7, 9.5, 75.0, 7200.0])
def test_time_axis_labels_are_distinct(end: float) -> None:
    """However short or long the run, each tick on the time axis has a label of its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        _time_axis(ax, end)
        fig.canvas.draw()
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    finally:
        plt.close(fig)
    assert len(labels) >= 2 and len(labels) == len(set(labels)), labels
