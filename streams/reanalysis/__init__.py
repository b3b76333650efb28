"""Re-analysis: replay a selection of past batches through a candidate analyzer, compare its
judgements with the current ones, and adopt them (`hsi reanalyze`).

`selection` and `report` are pure; `runner` keeps a run's state on the streams: the inputs are
the cameras' batches streams read by a consumer group of the run, the outputs `reanalysis.*`
facts on each camera's reanalyses stream. A run never writes an analysis and never alerts;
adoption writes new analyses that name the ones they supersede.
"""
