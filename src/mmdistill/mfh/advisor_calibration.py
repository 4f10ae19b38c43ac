"""Calibration of the advisor's predicted KD gain (generated: ``benchmarks/advisor_validation.py --fit``; do not edit).

Ridge (lambda 10.0) combination of the advisor's signals, fitted on the Venn development suite
(120 settings, seed base 1000); see :mod:`.advisor`.
"""

FEATURES = ['teacher_acc', 'student_acc', 'pilot_gain', 'pilot_se', 'gamma_hat', 'r2_b_from_a', 'r2_a_from_b', 'r2_y_from_a', 'r2_y_from_b', 'log_n', 'd_a_per_n', 'd_b_per_n']
PILOT = {'epochs': 100, 'lr': 1.0, 'folds': 5}
MEAN = [0.744052, 0.654323, -1.315282, 0.72225, 0.199059, -0.076425, 0.014718, 0.213938, 0.067964, 4.512751, 0.260625, 0.728875]
SD = [0.105634, 0.103826, 2.650403, 0.502256, 0.2733, 0.071358, 0.122391, 0.2153, 0.186922, 0.572517, 0.168001, 0.43483]
COEF = [0.396801, 0.25747, 0.338989, -0.446148, 0.039127, 0.109402, 0.216674, -0.281987, -0.137179, 0.218101, 0.304432, 0.010418]
INTERCEPT = -0.704500
SCALE0 = 0.859371
Q80 = 0.908532
