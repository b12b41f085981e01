"""Upload batching: S3 Object Created events (via EventBridge and SQS) -> one batch manifest per window.

The batcher Lambda receives up to ``settings.trigger.max_batch_records`` SQS messages collected during
``settings.trigger.batching_window_seconds``; one invocation is one *window*. For a window it

1. parses each message into typed events (EventBridge ``Object Created`` or a direct S3 notification;
   the S3 test event and other event types are acknowledged and logged),
2. deduplicates the objects by identity (bucket, key and version id, else ETag),
3. claims every identity in a DynamoDB ledger with a conditional write, so an object that S3,
   EventBridge or SQS delivers twice - in the same window or a later one - lands in exactly one batch,
4. writes ``s3://<data bucket>/<batches_prefix><batch_id>/manifest.jsonl`` (and ``quarantine.jsonl`` for
   objects whose key is unsafe), and
5. starts one labeling-pipeline execution with the manifest URI as its ``BatchManifestUri`` variable.

The ``batch_id`` is derived from the window's content (time of its earliest event + a hash of its
identities), so a retried invocation of the same window writes the same batch, and the pipeline is
started with the batch id as CodePipeline's idempotency token. A message is acknowledged only once its
object belongs to a batch whose execution has started (or is recorded in a quarantine file); anything
else is reported back to SQS as a batch item failure, retried, and finally parked in the dead-letter queue
(which raises an alarm). Nothing is dropped silently.

Modules, in the order a window flows through them:

* :mod:`alp.batching.events` - the typed edge: SQS records and the two S3 event shapes -> ``UploadEvent``;
* :mod:`alp.batching.plan` - pure: deduplicate a window, name its batch, render its manifest lines;
* :mod:`alp.batching.ledger` - the DynamoDB adapter that makes claims exactly-once;
* :mod:`alp.batching.window` - :func:`~alp.batching.window.process_sqs_records`, the orchestration that
  claims, writes the batch folder (through :mod:`alp.storage`) and starts the pipeline (through
  :mod:`alp.pipeline_runs`).
"""


class BatchingError(RuntimeError):
    """A batch could not be written or its pipeline execution could not be started."""
