"""moto's server, with one thread-safety fix to its SQS queue, for the tests.

moto 5.2.5's `Queue.delete_message` rebuilds the queue's message list without taking the
queue's lock, while `add_message` (an S3 notification, a SendMessage) appends under it and
other deletes rebuild it too. moto serves each request on its own thread, so a delete that
overlaps a notification drops the new message, and two overlapping deletes can bring one
deleted message back: the tests saw events never arrive, or arrive twice, for reasons of
the test server alone (several shippers on one queue make the overlap likely). Real SQS
has no such race. Here the delete takes the same lock as the append; nothing else changes.
"""

import sys

from moto.server import main
from moto.sqs.models import Queue

_delete_message = Queue.delete_message


def _locked_delete_message(self, receipt_handle):
    # The lock is a threading.Condition over an RLock: reentrant, as add_message nests.
    with self._messages_lock:
        return _delete_message(self, receipt_handle)


Queue.delete_message = _locked_delete_message

if __name__ == "__main__":
    sys.exit(main())
