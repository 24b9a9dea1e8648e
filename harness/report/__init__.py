"""The Pareto report: plotly figures, offline index.html, PNG/SVG, summary.md, points.csv.

``write_report(points_result, out_dir, title)`` is the entry point (used by
``vlm-pareto report`` and at the end of a sweep); see docs/report.md for how to read it.
"""

from harness.report.html import ReportPaths, write_report

__all__ = ["ReportPaths", "write_report"]
