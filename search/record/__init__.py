"""The experiment record: what a trial, a stage and an experiment on disk are, read once for
the search (search/stages) and analysis/ alike.

    stage_names    the stage names (teacher, baseline, distill, ..., final, twin), declared once
    trials         the one trial reader: TrialRecord (best epoch by trainables/trial_outcome),
                   a stage's winner, trial rows and Pareto set (stage_record), ranked candidates
    stats          MeanSd (the one mean ± sd), the KD gains' Welch and paired t intervals
    manifest       manifest.json (spec, stages, winners); summary + final_summary: summary.md
"""
