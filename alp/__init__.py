"""alp: the core package shared by the CDK app, the Lambdas, the inference engine and training.

It holds the contracts every part agrees on: settings, the keypoint schema, Ground Truth manifest
models, the storage adapter, the model-bundle descriptor and the declaration of the pipeline steps.
"""

__version__ = "0.1.0"
