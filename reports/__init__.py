"""What runs leave for people and other tools: evaluation records, DD-Ranking scores, exports, plots."""
