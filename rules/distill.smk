# Knowledge distillation (paper section 4.1, eq. 4): the AR teacher decodes its training set.
