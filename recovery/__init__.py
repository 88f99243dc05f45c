"""Exactly-once resumption on Bytewax's SQLite recovery store.

A flow run with ``-r DIR -s S -b B`` (or ``BYTEWAX_RECOVERY_DIRECTORY``,
``BYTEWAX_SNAPSHOT_INTERVAL``, ``BYTEWAX_RECOVERY_BACKUP_INTERVAL``) survives crashes: kill it at
any moment, start it again with the same store, and every alert ends up in every sink exactly
once. This module explains why, and :mod:`recovery.store` / ``python -m recovery`` manage the
store (``init``, ``inspect``, ``reset``).

The store
---------
``DIR`` holds ``N`` SQLite partition files ``part-<i>.sqlite3`` (``python -m recovery init DIR
--partitions N``); ``N`` is fixed for the store's life and must be at least the largest total
worker count ever run. Tables and their meaning: :mod:`recovery.store`.

Epochs and snapshots
--------------------
Bytewax cuts the run into epochs of ``S`` seconds of wall-clock time. At the end of each epoch,
as one consistent cut through the dataflow (timely dataflow's progress tracking: every item of
the epoch has gone through every step, and nothing of the next epoch has), each worker writes to
the store:

1. every **input partition**'s position (:meth:`snapshot` of the source partition): the
   generator's next event index, a file's ``(byte offset, record index)``, a Kafka partition's
   next offset;
2. the state of every **stateful step** key touched in the epoch: each detector shard's pickled
   state (:mod:`operators.runtime`: sketches and entity tables of one of ``SKETCHWATCH_SHARDS``
   shards), the sampler, the summary counts;
3. the state of every **stateful sink** partition (the Kafka alerts sink, below);

then its frontier (the epoch it moves on to). An epoch is *complete* once every worker's
frontier has passed it. The snapshots of an epoch are those taken after all of its items were
processed, so inputs, states and sinks are snapshotted at the same point of the stream.
Snapshots older than the newest complete one are garbage-collected after ``B`` seconds.

Resume
------
A new run resumes from the last complete epoch ``E``: every step key gets its state as of ``E``,
every input partition restarts at its position as of ``E`` (``python -m recovery inspect DIR``
shows both). Everything after ``E`` is read and processed again, so whatever the crashed run
emitted after ``E`` is emitted a second time: Bytewax alone is at-least-once. The worker count
may differ from the crashed run's (state is re-routed by key).

Why the replay emits the same alerts
------------------------------------
- Alerts depend only on the events and their order: detectors decide on event time, never on
  wall-clock time, batch boundaries, worker count or randomness (hashes are seeded,
  :mod:`sketches.hashing`); an entity's events always go to the same shard
  (:func:`operators.runtime.split_by_shard`) and a shard sees them in input order.
- Detector states are snapshotted at the same epoch boundary as the input positions, so after
  a resume each shard holds exactly the state it had after the events before those positions,
  and then sees the same events again, in the same order.
- Alert ids are hashes of flow, detector, entity, window and the triggering event
  (:attr:`operators.alerts.Alert.alert_id`), so a replayed alert has the id it had before.

Why the sinks store each alert once
-----------------------------------
- **SQL** (:class:`connectors.sql.SqlSink`): every row has a deterministic primary key and is
  written with insert-or-ignore (``ON CONFLICT DO NOTHING``), one transaction per batch; replayed
  rows are ignored. A database outage blocks the flow and retries the same batch (no loss), and a
  retry after an ambiguous commit is ignored row by row (no duplicate).
- **Kafka alerts** (:class:`connectors.kafka.KafkaAlertSink`): a stateful sink whose snapshot
  is the end offset of its alerts partition; on resume it reads back what it wrote after that
  snapshot and skips those alerts when the replay produces them again (the protocol and its
  proof are in :mod:`connectors.kafka`).
- **stdout** is at-least-once (a replay prints again).

What the guarantee needs
------------------------
- The same configuration across a crash and its resume: ``SKETCHWATCH_SHARDS``,
  ``SKETCHWATCH_SEED``, ``SKETCHWATCH_PARTITIONED_BY`` (checked: the source refuses to resume
  aligned state under other partitions or another setting), detector parameters, the sinks,
  step ids and detector code. A renamed
  step silently starts empty; a different shard count re-keys all state. To change them, start
  over: ``python -m recovery reset DIR --yes`` (and empty the sinks, or accept that alerts of
  the new run are added to the old ones).
- A replayable input: the generator and files are; a Kafka topic is as long as retention has not
  deleted the offsets after ``E`` (the source then stops with an error instead of skipping).
- Input order: positions are per input partition; the interleaving of *different* input
  partitions is not recorded, and a replay may interleave them differently. Replay is exactly
  deterministic when each detector's entities come from one partition each: a one-partition
  topic, or messages keyed by that detector's entity. ``python -m connectors.produce`` keys by
  the entity of the flow's *first* detector only, so the other detectors (and global ones) see
  entities spread over partitions; an alert that depends on how those partitions interleaved
  (order within an entity, what counts as late in a window) can differ in the replay; then the
  crashed run's alert and the replay's both stay stored (no id is ever stored twice).
- Consistent partitions: restore all ``part-*.sqlite3`` files of one store together. SIGTERM
  and SIGINT stop without a final snapshot: the next run replays from the last complete epoch.
"""
