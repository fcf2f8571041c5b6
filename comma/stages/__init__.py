"""The functions the workflow's rules call, one module per stage: teacher, distill, align,
comma, nar. Each loads its inputs, calls the layers below and writes its outputs."""
