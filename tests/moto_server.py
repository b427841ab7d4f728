"""moto's server, with a thread-safety fix and a cost fix to its SQS queue, for the tests.

moto 5.2.5's `Queue.delete_message` rebuilds the queue's message list without taking the
queue's lock, while `add_message` (an S3 notification, a SendMessage) appends under it and
other deletes rebuild it too. moto serves each request on its own thread, so a delete that
overlaps a notification drops the new message, and two overlapping deletes can bring one
deleted message back: the tests saw events never arrive, or arrive twice, for reasons of
the test server alone (several shippers on one queue make the overlap likely). Real SQS
has no such race. Here the delete takes the same lock as the append.

moto's ReceiveMessage checks each message it returns against the queue's retention period
by computing every attribute of the queue, and three of those count every message in it: a
receive of 10 messages from a queue of 1,700 took 0.9 s (real SQS: tens of milliseconds;
22 ms here with the fix), so a backlog bench measured moto, not the shipper. Here the check
reads the retention period alone; its answer is the same.
"""

import sys

from moto.core.utils import unix_time
from moto.server import main
from moto.sqs.models import Queue, SQSBackend

_delete_message = Queue.delete_message


def _locked_delete_message(self, receipt_handle):
    # The lock is a threading.Condition over an RLock: reentrant, as add_message nests.
    with self._messages_lock:
        return _delete_message(self, receipt_handle)


Queue.delete_message = _locked_delete_message


def _is_message_valid_based_on_retention_period(self, queue_name, message):
    retention_period = int(self.get_queue(queue_name).message_retention_period)
    return retention_period + message.sent_timestamp / 1000 > unix_time()


SQSBackend.is_message_valid_based_on_retention_period = (
    _is_message_valid_based_on_retention_period
)

if __name__ == "__main__":
    sys.exit(main())
