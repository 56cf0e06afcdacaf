"""ReMIND2Reg evaluation: TRE, TRE30, SDlogJ, folds and runtime for organisers' and Grand Challenge layouts.

Modules (one job each): `fields` (read + validate displacement fields), `ground_truth` (pairs, landmarks,
spacing), `metrics` (TRE, SDlogJ, folds, aggregates), `layouts` (organisers' flat folder and Grand Challenge
predictions.json discovery), `evaluate` (CLI, metrics.json), `rank` (Learn2Reg rank score), `report`
(optional PNGs, matplotlib imported lazily).
"""
