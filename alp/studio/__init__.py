"""Label Studio: the REST client, the labeling configs and a local server (``alp studio``)."""
