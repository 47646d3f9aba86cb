"""Reports on runs: ``dreamrl report`` writes one self-contained HTML page per call.

:mod:`dreamrl.report.html` reads run dirs and builds the page; :mod:`dreamrl.report.plots`
draws its figures with matplotlib (imported only when a plot is drawn).
"""

from __future__ import annotations

from dreamrl.report.html import build_report, write_report

__all__ = ["build_report", "write_report"]
