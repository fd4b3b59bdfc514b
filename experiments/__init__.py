"""selfx orchestration: configs, runners, tracking, export and the CLI."""
