# Knowledge distillation against teacher quality (issue #27): KD corpora from the NMT teacher
# at several points of its training, each with kd and rawkept CoMMA and a NAT.
