# Calibration of R, T and D against a known dependency (issue #27): mini NMT corpora whose
# hidden register is drawn at several levels of entropy; raw CoMMA per level and seed.
