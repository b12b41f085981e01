"""A local project: your own frames on one machine, in the same layout the deployed stack's buckets hold."""
