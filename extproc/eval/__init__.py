"""`quorum eval`: score arms (models or Quorum aliases) on a JSONL dataset through the gateway.

dataset -> answers per arm (runner) -> grader verdicts (grader) -> scores, paired-bootstrap intervals
(stats), cost and calls saved (cost) -> terminal table, JSON, markdown and a PNG plot (report).
"""
