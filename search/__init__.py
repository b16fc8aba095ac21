"""The service: the command line, the pipeline of Ray Tune stages and the experiment record.

    input/    what the user gives: flags, presets, the resolved SearchSpec, pre-flight validation
    tune/     the Tune machinery: Optuna searcher and study, capped ASHA, Ray adapter, loggers, progress
    stages/   teacher -> baseline -> distill (-> chain) -> final, the teacher-logit cache, resume
    record/   the experiment record: stage names, the trial reader, mean ± sd and intervals,
              manifest.json and summary.md (what search/stages and analysis/ both read)
    presets/  YAML presets
"""
