"""Running a stage's work on its records: in this process (`local`). The Ray executor is `distill.ray`."""
