"""Click commands grouped by topic; cli.py registers them. Parsing and printing only."""
