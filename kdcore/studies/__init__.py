"""Studies: named groups of runs, a grid over spec fields × seeds or an Optuna search, summarised per
configuration with mean ± std over seeds at the epoch validation selected (kdcore.summary).

    base, study = parse_study_yaml(text)          # a spec with a `study:` block
    study_id = submit_study(store, base, study)   # queues every run (or creates the search)
    print(study_table(store, study_id).format("markdown"))
"""
from kdcore.studies.expand import Configuration, PlannedRun, config_key, expand_study, submit_study
from kdcore.studies.spec import ParamSpace, SearchSpec, StudySpec, parse_study_yaml, split_study
from kdcore.studies.stats import MeanStd, PairedDifference, mean_std, paired_difference
from kdcore.studies.table import (
    ConfigRow,
    RunResult,
    StudyTable,
    build_table,
    collect_results,
    run_result,
    study_table,
)

__all__ = [
    "StudySpec", "SearchSpec", "ParamSpace", "parse_study_yaml", "split_study",
    "Configuration", "PlannedRun", "config_key", "expand_study", "submit_study",
    "MeanStd", "PairedDifference", "mean_std", "paired_difference",
    "RunResult", "ConfigRow", "StudyTable", "build_table", "collect_results", "run_result", "study_table",
]
