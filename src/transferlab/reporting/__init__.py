"""Reports of finished runs: read run directories, group them over seeds into a leaderboard, judge transfer
learning's claims against training from scratch, and write one self-contained HTML page with plots.

Above `transferlab.api` in the layers (it loads trained models for embedding maps); `transferlab report` and
``compare`` call it.
"""

from transferlab.reporting.leaderboard import (
    SCRATCH,
    LeaderboardRow,
    Stat,
    Verdict,
    leaderboard,
    verdicts,
    write_leaderboard_csv,
)
from transferlab.reporting.report import Report, build_report, write_report
from transferlab.reporting.runs import RunRecord, RunSet, find_runs, read_run

__all__ = ["SCRATCH", "LeaderboardRow", "Report", "RunRecord", "RunSet", "Stat", "Verdict", "build_report",
           "find_runs", "leaderboard", "read_run", "verdicts", "write_leaderboard_csv", "write_report"]
