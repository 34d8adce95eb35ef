"""The experiment report: statistics, the JSON report, the terminal table and the page."""
