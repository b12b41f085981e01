"""``alp serve``: the inference engine behind Label Studio's ML backend protocol, plus a plain JSON API.

One module per concern: :mod:`~alp.serve.protocol` (Label Studio's requests and responses as typed models, the
labeling config parsed into the controls we answer for), :mod:`~alp.serve.images` (where an image may come from,
fetched with a size limit, decoded with the pipeline's own rules), :mod:`~alp.serve.bundles` (the verified
bundle being served and its swap when the registry approves a newer one), :mod:`~alp.serve.predictions`
(engine output -> Label Studio results and our own JSON), :mod:`~alp.serve.assist` (keypoints of the person an
annotator just outlined), :mod:`~alp.serve.app` (the Starlette app and a uvicorn runner).
"""
