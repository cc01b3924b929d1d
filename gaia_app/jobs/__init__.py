"""Asset generation jobs: what the asset routes, the Celery tasks and the CLI share.

- `settings`: the asset service's configuration (`settings.assets`);
- `runtime`: `AssetRuntime`, kept at `gaia().assets`: storage, generators, the event
  publisher and the dispatcher, each built on first use (a web worker that never sees an
  asset request loads neither boto3, numpy nor Celery);
- `runner`: one attempt at one job (claim, lease, generate, store, finish);
- `control`: cancel, from outside the runner (the API and the CLI call it);
- `dispatch`: how a job reaches a runner (Celery through Redis, or threads of this process
  on the embedded default) and the sweeper that re-sends jobs whose worker or message died;
- `events`: `asset.generation.*` to NATS (`nats_events`), or to the log;
- `cli`: `flask jobs list|show|retry|cancel|sweep`.
"""
