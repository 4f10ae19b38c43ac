"""Calibration of the advisor's predicted KD gain (generated: ``benchmarks/advisor_validation.py --fit``; do not edit).

Ridge (lambda 10.0) combination of the advisor's signals, fitted on the Venn development suite
(200 settings, seed base 1000); see :mod:`.advisor`.
"""

FEATURES = ['teacher_acc', 'student_acc', 'pilot_gain', 'pilot_se', 'gamma_hat', 'r2_b_from_a', 'r2_a_from_b', 'r2_y_from_a', 'r2_y_from_b', 'log_n', 'd_a_per_n', 'd_b_per_n', 'moment_shared', 'moment_gamma', 'moment_beta']
PILOT = {'epochs': 100, 'lr': 1.0, 'folds': 5}
MEAN = [0.745644, 0.664038, -1.349268, 0.736551, 0.197579, -0.068167, 0.032075, 0.219764, 0.084885, 4.560116, 0.253125, 0.692175, 0.114132, 0.365747, 0.441402]
SD = [0.105775, 0.105775, 2.754547, 0.486376, 0.27209, 0.072669, 0.134978, 0.215766, 0.182494, 0.567693, 0.169943, 0.424318, 0.119761, 0.429159, 0.736034]
COEF = [0.411207, 0.211669, 0.316453, -0.350991, 0.004425, 0.015467, 0.233382, -0.337344, -0.14587, 0.408457, 0.423231, 0.009605, 0.311867, -0.054483, 0.000685]
INTERCEPT = -0.699300
SCALE0 = 0.824405
Q80 = 0.881707
