"""The synthesized CloudFormation templates (``cdk.out/``) as the one description of the stack.

:mod:`alp.cloudformation.template` reads a template and resolves its intrinsic functions against the
physical names and ARNs of an embedded account; :mod:`alp.cloudformation.embedded_stack` creates the
resources in the embedded AWS (moto) from it. The demo, the tests and ``alp rehearse`` all build their AWS
this way, so none of them carries a hand-written copy of the stack.
"""
