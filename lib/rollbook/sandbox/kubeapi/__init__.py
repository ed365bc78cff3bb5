"""The sandbox's Kubernetes API, by responsibility (``sandbox/apiserver.py`` composes it).

Two seams, each the only place of its kind:

- :meth:`rollbook.sandbox.apiserver.ApiServer.handle` — every HTTP request passes through it
  (recording, then :attr:`~rollbook.sandbox.apiserver.ApiServer.layers`, then authentication,
  authorization and dispatch). A fault-injection layer hooks here.
- :meth:`rollbook.sandbox.kubeapi.authz.Authorizer.decide` — every allow/deny by identity, verb,
  resource and namespace, for requests and for ``kubectl auth can-i`` alike.
"""
