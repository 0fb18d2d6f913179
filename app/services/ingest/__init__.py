"""Updates sent back by partners (§5.2): receipt, the durable queue, and applying records.

Owns ``update_batches`` and their results: the batch envelope and idempotency on receipt
(``store``), the pure quality checks (``rules``), the chunk's slice of the registry
(``state``), applying each record kind (``apply``) and the leased, pipelined worker
(``worker``).

Registry staff send batches too (``store.enqueue_staff``: a grievance's re-survey), with
no agreement; their history rows are marked ``staff`` instead of ``partner_batch``.

Public: ``store`` (``Sender``, ``receive``, ``enqueue_staff``, ``get_batch``, ``check_key``,
``read_capped``), ``worker.start_in_process``, ``worker.run_worker``. The rest is
internal to ingest (tests reach in to check its invariants).
"""
