"""`rollbook serve`: Argo's abort notification in, the read-only steps' record out, with no human in the loop.

    notification.py  the body Argo renders (and Argo Events' envelopes); incident ids
    settings.py      command line + rollbook.yaml `serve:`; the token
    queue.py         the persistent queue (SQLite, WAL): queued -> running -> done | failed
    executor.py      the Executor protocol; LocalExecutor runs each attempt in a child process
    child.py         that child: rollbook.app.run, serve.json, the first look, the sealed record
    firstlook.py     the first look posted to Slack / the webhook (dry run unless serve.notify)
    metrics.py       Prometheus metrics;  api.py  the HTTP routes;  service.py  workers, shutdown, recovery
"""
