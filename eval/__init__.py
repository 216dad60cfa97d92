"""Evaluation: EmoCue-360 cue-level scoring, cue extraction from descriptions, and the benchmark runner.

emocue360.py (the metric, released `max` matching + `one-to-one`), embed.py (all-MiniLM-L6-v2, batched and
cached), extract_offline.py / extract_openai.py (descriptions -> visual/auditory/emotional cues), manifest.py,
analyzers.py (in process or over HTTP), runner.py (`xemo eval run`), labels.py, report.py (report.md + plots).
"""
