"""Neural building blocks shared by every model: Transformer blocks, task pre-nets, CoMMA's
masking, and the attention losses of the paper's eq. 6-8. Imports only torch and `comma.data`."""
