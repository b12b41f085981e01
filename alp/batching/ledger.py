"""The batcher's DynamoDB adapter: the ledger that makes every object land in exactly one batch."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from alp import aws
from alp.batching import BatchingError

log = logging.getLogger(__name__)

LEDGER_KEY = "pk"
# The ledger only has to outlive every redelivery of an event: SQS keeps a message at most 14 days.
LEDGER_TTL_SECONDS = 30 * 24 * 3600

ClaimStatus = Literal["claimed", "duplicate", "busy", "resume"]


@dataclass(frozen=True)
class Claim:
    status: ClaimStatus
    owner_batch: str


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    status: Literal["starting", "started", "recorded"]
    manifest_uri: str = ""
    execution_id: str = ""


class BatchLedger:
    """Exactly-once bookkeeping in one DynamoDB table (partition key ``pk``, TTL attribute ``expires_at``).

    ``object#<identity>`` items say which batch owns an object; ``batch#<id>`` items say how far a batch
    got. A claim whose batch never reached ``starting`` and whose owner's lease ran out (the invocation
    died: SQS redelivers only after the visibility timeout) is taken over by the next window.
    """

    def __init__(self, table: str, *, lease_seconds: int, clock: Callable[[], float] = time.time):
        if not table:
            raise BatchingError("no ledger table name (ResourceNames.batch_ledger_table is empty)")
        self.table = table
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._ddb = aws.client("dynamodb")

    def _expires(self, now: float) -> dict[str, str]:
        return {"N": str(int(now) + LEDGER_TTL_SECONDS)}

    def claim(self, identity: str, batch_id: str) -> Claim:
        """Claim ``identity`` for ``batch_id``; says who owns it when someone else does."""
        now = self.clock()
        key = {LEDGER_KEY: {"S": f"object#{identity}"}}
        try:
            self._ddb.put_item(
                TableName=self.table,
                Item={**key, "batch_id": {"S": batch_id}, "claimed_at": {"N": f"{now:.3f}"},
                      "expires_at": self._expires(now)},
                ConditionExpression="attribute_not_exists(#pk) OR batch_id = :b",
                ExpressionAttributeNames={"#pk": LEDGER_KEY},
                ExpressionAttributeValues={":b": {"S": batch_id}},
            )
            return Claim("claimed", batch_id)
        except self._ddb.exceptions.ConditionalCheckFailedException:
            pass
        item = self._ddb.get_item(TableName=self.table, Key=key, ConsistentRead=True).get("Item")
        if item is None:  # its claim expired between the two calls: try once more
            return self.claim(identity, batch_id)
        owner = item["batch_id"]["S"]
        claimed_at = item["claimed_at"]["N"]
        record = self.batch(owner)
        if record is not None and record.status in ("started", "recorded"):
            return Claim("duplicate", owner)
        lease_over = float(claimed_at) + self.lease_seconds < now
        if not lease_over:
            return Claim("busy", owner)
        if record is not None:  # "starting": the dead owner wrote the manifest; finish its start
            return Claim("resume", owner)
        try:
            self._ddb.update_item(
                TableName=self.table, Key=key,
                UpdateExpression="SET batch_id = :b, claimed_at = :now, expires_at = :exp",
                ConditionExpression="batch_id = :old AND claimed_at = :old_at",
                ExpressionAttributeValues={":b": {"S": batch_id}, ":now": {"N": f"{now:.3f}"},
                                           ":exp": self._expires(now), ":old": {"S": owner},
                                           ":old_at": {"N": claimed_at}},
            )
        except self._ddb.exceptions.ConditionalCheckFailedException:
            return Claim("busy", owner)
        log.warning("took over %s from abandoned batch %s", identity, owner)
        return Claim("claimed", batch_id)

    def batch(self, batch_id: str) -> BatchRecord | None:
        item = self._ddb.get_item(TableName=self.table, Key={LEDGER_KEY: {"S": f"batch#{batch_id}"}},
                                  ConsistentRead=True).get("Item")
        if item is None:
            return None
        return BatchRecord(batch_id, item["status"]["S"], item.get("manifest_uri", {}).get("S", ""),
                           item.get("execution_id", {}).get("S", ""))

    def record_batch(self, record: BatchRecord, *, objects: int = 0, quarantined: int = 0) -> None:
        now = self.clock()
        self._ddb.put_item(TableName=self.table, Item={
            LEDGER_KEY: {"S": f"batch#{record.batch_id}"}, "status": {"S": record.status},
            "manifest_uri": {"S": record.manifest_uri}, "execution_id": {"S": record.execution_id},
            "objects": {"N": str(objects)}, "quarantined": {"N": str(quarantined)},
            "updated_at": {"N": f"{now:.3f}"}, "expires_at": self._expires(now),
        })
