# Alignment extraction (paper section 5.1): the teachers' teacher-forced attention.
