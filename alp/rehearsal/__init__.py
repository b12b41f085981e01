"""``alp rehearse``: the synthesized stack, every step under its own role, IAM enforced, before a deploy.

- :mod:`alp.rehearsal.policy`: IAM's evaluation of one request against a role's statements (pure);
- :mod:`alp.rehearsal.calls`: what IAM action, resource and condition keys an AWS API call is checked with;
- :mod:`alp.rehearsal.principals`: credentials per role and the record of every call a step makes;
- :mod:`alp.rehearsal.doubles`: the services moto lacks (Rekognition Custom Labels answered by botocore's
  Stubber, SageMaker Processing run locally under its role);
- :mod:`alp.rehearsal.run`: the round through both pipelines, per variant, and its JSON report.
"""
