"""How important each unit is: static metrics on the residual stream, task objectives, Shapley estimators,
the metric registry, calibration data and rankings. Imports core, engine, data and evaluation."""
